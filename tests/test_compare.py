"""`python -m transferlab.compare`: tables from metrics.json + overrides.yaml, seed aggregation, plots, failures."""

import contextlib
import csv
import json
import os
import statistics
import sys
from pathlib import Path

import proc_helpers
import pytest
from conftest import ROOT

from transferlab.analysis.runs import load_runs, parse_overrides
from transferlab.compare import main


def make_run(folder: Path, overrides: list[str], metrics: dict | None = None, error: dict | None = None) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if error is not None:
        (folder / "error.json").write_text(json.dumps(error))
    return folder


def metrics(acc: float, pct: float, wall: float = 10.0) -> dict:
    return {"test/acc": acc, "test/loss": 1.0 - acc, "test/f1": acc, "params/trainable_pct": pct, "time/wall_s": wall}


ACC = {("full", 0): 0.80, ("full", 1): 0.84, ("lora", 0): 0.78, ("lora", 1): 0.76}
PCT = {"full": 100.0, "lora": 1.5}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A multirun folder: peft x seed, plus one failed job."""
    root = tmp_path / "multirun"
    for i, ((peft, seed), acc) in enumerate(ACC.items()):
        make_run(root / str(i), ["data=digits", f"peft={peft}", f"seed={seed}"], metrics(acc, PCT[peft]))
    make_run(root / "4", ["data=digits", "peft=lora", "seed=2"],
             error={"reason": "diverged", "error": "TrainingDiverged: non-finite training loss"})
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "+new=x", "++force=2", "~gone", "group=opt"]) == {
        "a.b": "1", "new": "x", "force": "2", "gone": "<deleted>", "group": "opt"}


def test_table_sorted_with_seed_means_and_failures(sweep, capsys):
    assert main([str(sweep), "--sort", "test/acc"]) == 0
    rows = read_csv(sweep / "compare.csv")
    # differing overrides only (data=digits is common), best first, the failed job last with its reason
    assert [k for k in rows[0] if k in ("data", "peft", "seed")] == ["peft", "seed"]
    assert [float(r["test/acc"]) for r in rows[:4]] == sorted(ACC.values(), reverse=True)
    assert rows[4]["status"] == "failed" and rows[4]["reason"] == "diverged" and rows[4]["test/acc"] == ""
    groups = {r["peft"]: r for r in read_csv(sweep / "compare_seeds.csv")}
    full = [ACC[("full", 0)], ACC[("full", 1)]]
    assert float(groups["full"]["test/acc_mean"]) == pytest.approx(statistics.fmean(full))
    assert float(groups["full"]["test/acc_std"]) == pytest.approx(statistics.stdev(full))
    assert int(groups["lora"]["n"]) == 2 and int(groups["lora"]["failed"]) == 1
    assert float(groups["lora"]["trainable_pct_mean"]) == 1.5
    md = (sweep / "compare.md").read_text()
    assert "0.82 ± 0.0283" in md  # mean ± std of full's two seeds
    assert (sweep / "compare.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "5 runs (1 failed or incomplete)" in out


def test_seeds_group_across_their_own_pretrained_runs(tmp_path):
    """Fine-tuning seed k from pretraining seed k: different paths, one recipe, one row of mean ± std."""
    for seed in (0, 1):
        up = make_run(tmp_path / f"seed{seed}" / "pretrain", ["task=supervised", f"seed={seed}"], metrics(0.9, 100.0))
        for peft, acc in (("full", 0.8 + seed / 10), ("lora", 0.7 + seed / 10)):
            make_run(tmp_path / f"seed{seed}" / peft, ["task=finetune", f"peft={peft}", f"task.pretrained={up}", f"seed={seed}"],
                     metrics(acc, PCT[peft]))
    assert main([str(tmp_path)]) == 0
    groups = {(r["task"], r["peft"]): r for r in read_csv(tmp_path / "compare_seeds.csv")}
    assert {k: int(r["n"]) for k, r in groups.items()} == {("supervised", ""): 2, ("finetune", "full"): 2, ("finetune", "lora"): 2}
    assert groups[("finetune", "full")]["task.pretrained"] == "run(task=supervised)"
    assert float(groups[("finetune", "full")]["test/acc_mean"]) == pytest.approx(0.85)


def test_loss_sorts_ascending_and_x_axis_key(tmp_path):
    root = tmp_path / "kshot"
    i = 0
    for peft in ("full", "linear_probe"):
        for k in (5, 10, 20):
            make_run(root / str(i), [f"peft={peft}", f"data.labels_per_class={k}"], metrics(0.5 + k / 100, PCT.get(peft, 0.7)))
            i += 1
    out = tmp_path / "out"
    assert main([str(root), "--sort", "test/loss", "--x", "data.labels_per_class", "--out", str(out)]) == 0
    losses = [float(r["test/loss"]) for r in read_csv(out / "compare.csv")]
    assert losses == sorted(losses)
    assert (out / "compare.png").stat().st_size > 1000
    assert not (out / "compare_seeds.csv").exists()
    # an x that is neither a differing override nor a metrics.json key is named in the error
    assert main([str(root), "--x", "model.width", "--out", str(out)]) == 2


def test_run_folders_and_pipeline_runs(tmp_path):
    """Run folders given one by one; a pipeline's stage subfolders are part of its run, not runs of their own."""
    a = make_run(tmp_path / "2026-01-01" / "10-00-00-000001", ["task=transfer", "peft=full"],
                 {**metrics(0.9, 100.0), "gain/finetune": 0.1})
    (a / "finetune").mkdir()
    (a / "finetune" / "metrics.json").write_text(json.dumps(metrics(0.9, 100.0)))
    b = make_run(tmp_path / "2026-01-01" / "10-00-00-000002", ["task=transfer", "peft=linear_probe"], metrics(0.7, 0.7))
    c = make_run(tmp_path / "2026-01-01" / "10-00-00-000003", ["task=transfer", "peft=lora"])  # still running / killed
    runs = load_runs([a, b, c])
    assert [r.status for r in runs] == ["ok", "ok", "incomplete"]
    assert [r.overrides["peft"] for r in runs] == ["full", "linear_probe", "lora"]
    assert len(load_runs([tmp_path])) == 3
    out = tmp_path / "cmp"
    assert main([str(a), str(b), str(c), "--metrics", "test/acc", "gain/finetune", "--out", str(out), "--no-plot"]) == 0
    rows = read_csv(out / "compare.csv")
    assert rows[0]["gain/finetune"] == "0.1" and rows[0]["trainable_pct"] == "100.0"
    assert not (out / "compare.png").exists()


def test_compare_cli_never_imports_torch(sweep):
    code = ("import sys; from transferlab.compare import main; rc = main([sys.argv[1], '--no-plot']); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = proc_helpers.run([sys.executable, "-c", code, str(sweep)], cwd=ROOT, env={**os.environ}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| run | status | peft | seed |" in proc.stdout


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err


def test_many_differing_keys_nan_runs_unknown_sort_and_a_constant_x(tmp_path, capsys):
    """`compare outputs/<day>/*/`: runs differing in many keys, every one 100 % trainable, one NaN."""
    root = tmp_path / "day"
    keys = ["data.labels_per_class", "model", "optimizer.lr", "trainer.max_epochs", "task", "peft", "data.classes"]
    for i in range(9):
        over = [f"{k}={v}" for k, v in zip(keys[: 2 + i % 6], ["5", "cnn", "0.01", "3", "supervised", "full", "[5,6,7,8,9]"])]
        over.append(f"task.pretrained=/very/long/path/outputs/2026-12-0{i % 3 + 1}/10-2{i}-00-123456/pretrain")
        make_run(root / f"10-2{i}", over, metrics(0.5 + 0.03 * i, 100.0))
    make_run(root / "10-29", ["model=mlp"], {**metrics(0.1, 100.0), "test/acc": "nan"})
    assert main([str(root), "sort=test/acc"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split(" | ")
    assert len(header) <= 12 and "overrides" in out.splitlines()[0], header  # grouped, not 30 columns
    assert "…/10-20-00-123456/pretrain" in out and "/very/long/path" not in out
    nan_row = next(line for line in out.splitlines() if line.startswith("| 10-29 "))
    assert "| failed |" in nan_row and "test/acc not finite" in nan_row
    assert main([str(root), "sort=test/accuracy"]) == 2
    assert "sort=test/accuracy is not a metric of these runs; valid: " in capsys.readouterr().err
    png = root / "compare.png"
    assert png.is_file() and png.stat().st_size > 10_000  # the bar chart (x = trainable % is 100 for all)


@pytest.mark.parametrize("name, text, expected", [
    ("truncated", '{"test/acc": 0.5', "metrics.json is not readable (JSONDecodeError"),
    ("not_a_dict", "[1, 2]", "metrics.json holds a list, not a dict"),
    ("binary", "\udcff".encode("utf-8", "surrogateescape").decode("latin-1") * 3, "metrics.json is not readable"),
])
def test_a_corrupt_metrics_file_marks_its_run_failed_and_the_rest_compare(tmp_path, name, text, expected):
    from transferlab.analysis.runs import load_runs

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text(text, encoding="latin-1")
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "metrics.json").write_text('{"test/acc": 0.7}')
    runs = {r.name: r for r in load_runs([tmp_path])}
    assert (runs["bad"].status, runs["bad"].reason) == ("failed", "unreadable")
    assert expected in runs["bad"].error
    assert (runs["good"].status, runs["good"].metrics) == ("ok", {"test/acc": 0.7})
    assert main([str(tmp_path), "no_plot=true"]) == 0


def seed_pair(root: Path, bad: str, key: str = "test/acc") -> Path:
    """Two seeds of one recipe: seed 0 fine, seed 1's metrics.json holds `bad` (raw JSON text) under `key`."""
    make_run(root / "0", ["seed=0"], metrics(0.8, 100.0))
    make_run(root / "1", ["seed=1"])
    good = json.dumps({k: v for k, v in metrics(0.6, 100.0).items() if k != key})
    (root / "1" / "metrics.json").write_text(good[:-1] + f', "{key}": {bad}}}')
    return root


@pytest.mark.parametrize("bad, expected", [
    ("[1]", "test/acc=[1] is a list, not a number"),
    ('{"a": 1}', 'test/acc={"a": 1} is a dict, not a number'),
    ("true", "test/acc=true is a bool, not a number"),
    ('"high"', 'test/acc="high" is not a number'),
    ("null", "test/acc=null is not a number"),
])
def test_a_non_numeric_metric_fails_its_run_and_is_not_averaged(tmp_path, bad, expected):
    root = seed_pair(tmp_path / "sweep", bad)
    assert main([str(root), "no_plot=true"]) == 0
    rows = {r["run"]: r for r in read_csv(root / "compare.csv")}
    assert (rows["0"]["status"], rows["1"]["status"], rows["1"]["reason"]) == ("ok", "failed", "invalid")
    assert rows["1"]["error"] == f"{expected} (in {root / '1' / 'metrics.json'})"
    [group] = read_csv(root / "compare_seeds.csv")
    assert (group["n"], group["failed"], group["test/acc_n"], group["test/acc_mean"]) == ("1", "1", "1", "0.8")


def test_n_counts_the_values_each_mean_averages(tmp_path):
    """A finished run without a metric is left out of that metric's mean, and its count says so."""
    make_run(tmp_path / "0", ["seed=0"], metrics(0.8, 100.0))
    make_run(tmp_path / "1", ["seed=1"], {k: v for k, v in metrics(0.6, 100.0).items() if k != "test/f1"}
             | {"provenance/git_dirty": True, "pretrained": None})  # a boolean and a null where they belong
    assert main([str(tmp_path), "no_plot=true"]) == 0
    [group] = read_csv(tmp_path / "compare_seeds.csv")
    assert (group["n"], group["test/acc_n"], group["test/f1_n"], group["test/f1_mean"]) == ("2", "2", "1", "0.8")
    assert "| 2 | 0 | 0.7 ± 0.1414 | 0.8 ± 0 (n=1) |" in (tmp_path / "compare.md").read_text()


@pytest.mark.parametrize("key, bad, expected", [
    ("test/acc", "-5", "test/acc=-5 is not a fraction in [0, 1]"),
    ("test/acc", "1.5", "test/acc=1.5 is not a fraction in [0, 1]"),
    ("finetune/test/f1", "2", "finetune/test/f1=2 is not a fraction in [0, 1]"),
    ("params/trainable_pct", "150.0", "params/trainable_pct=150.0 is not a percentage in [0, 100]"),
])
def test_documented_fractions_out_of_range_fail_their_run(tmp_path, key, bad, expected):
    root = seed_pair(tmp_path / "sweep", bad, key)
    make_run(tmp_path / "sweep" / "2", ["seed=2"], metrics(0.7, 100.0) | {"test/loss": 7.5, "gain/finetune": -0.3})
    assert main([str(root), "sort=test/acc", "no_plot=true"]) == 0
    rows = read_csv(root / "compare.csv")
    assert [(r["run"], r["status"]) for r in rows] == [("0", "ok"), ("2", "ok"), ("1", "failed")]  # failed last
    assert rows[2]["error"].startswith(expected + " (in ")
    [group] = read_csv(root / "compare_seeds.csv")
    assert (group["n"], float(group["test/acc_mean"])) == ("2", pytest.approx(0.75))


@pytest.mark.parametrize("bad, expected", [
    ("1e308", "test/loss=1e+308 is beyond any metric (larger than 3.4e+38)"),
    ("9" * 401, "test/loss=99999999999999999999... is beyond any metric (larger than 3.4e+38)"),
], ids=["1e308", "401-digit-int"])
def test_absurd_numbers_fail_their_run_and_the_plot_of_the_others_is_written(tmp_path, capsys, bad, expected):
    root = tmp_path / "sweep"
    for name, over, loss in [("0", "seed=0 k=5", "0.2"), ("1", "seed=1 k=5", bad), ("2", "seed=0 k=10", "0.1"),
                             ("3", "seed=0 k=1e308", "0.3")]:  # run 3: an override too large to draw
        make_run(root / name, over.replace("k=", "data.labels_per_class=").split())
        (root / name / "metrics.json").write_text(f'{{"test/acc": 0.7, "test/loss": {loss}}}')
    assert main([str(root), "y=test/loss", "x=data.labels_per_class"]) == 0
    assert capsys.readouterr().err == ""
    rows = {r["run"]: r for r in read_csv(root / "compare.csv")}
    assert [rows[name]["status"] for name in "0123"] == ["ok", "failed", "ok", "ok"]
    assert rows["1"]["error"].startswith(expected + " (in ")
    assert (root / "compare.png").stat().st_size > 1000  # the line through k=5 and k=10


@pytest.mark.parametrize("code, expected", [
    (28, "error: disk full while writing {out}/compare.png: free space there or choose another out="),
    (30, "error: read-only file system while writing {out}/compare.png: make that folder writable or choose another out="),
])
def test_a_full_disk_leaves_the_old_plot_and_says_so_in_one_line(sweep, tmp_path, capsys, monkeypatch, code, expected):
    from matplotlib.figure import Figure

    out = tmp_path / "reports"
    assert main([str(sweep), f"out={out}"]) == 0
    before = (out / "compare.png").read_bytes()
    capsys.readouterr()

    def fills_the_disk(self, fname, **kwargs):  # the first bytes reach the file, then the disk is full
        with open(fname, "wb") if isinstance(fname, (str, os.PathLike)) else contextlib.nullcontext(fname) as f:
            f.write(before[:100])
            f.flush()
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Figure, "savefig", fills_the_disk)
    assert main([str(sweep), f"out={out}"]) == 2
    assert capsys.readouterr().err == expected.format(out=out) + "\n"
    assert (out / "compare.png").read_bytes() == before  # whole: the new one never replaced it
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.md", "compare.png", "compare_seeds.csv"]


def test_plot_labels_show_overrides_and_the_all_runs_bar_is_runs():
    from transferlab.analysis.plots import _short_label

    assert _short_label("runs") == "runs"  # one group (only the seed varies): was drawn as "runs="
    assert _short_label("peft=lora, optimizer.lr=0.001") == "peft=lora, optimizer.lr=0.001"
