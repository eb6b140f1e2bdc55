"""What a run writes is what it measured: last.ckpt is the final weights, metrics.json names each
checkpoint with its step, `eval ckpt_path=<run folder>` reproduces the run's test/* exactly (every
task, every peft method, every pipeline stage), and the pipeline hands off the final pretrained weights."""

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg

from transferlab.runner.stage import run_stage

# tiny transformer (every task and every peft method fits it); val never at the last epoch, so
# ModelCheckpoint alone would leave last.ckpt stale
TINY = ["model=transformer", "model.width=16", "model.depth=1", "model.heads=2", "model.mlp_ratio=2"]
FAST = ["trainer.enable_progress_bar=false", "trainer.max_epochs=3", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=2", "callbacks.progress_bar=null"]
TEXT = ["data=bbc_news", "data.max_length=16", "data.tokenizer.vocab_size=300", "data.batch_size=64"]
PEFT = ["full", "linear_probe", "freeze", "bitfit", "lora", "dora", "ia3", "loha", "lokr", "adapter"]


def _default_or_slow(values: list[str], default: set[str]) -> list:
    """The whole matrix runs under CI's slow marker (~3 min here); a representative row runs by default."""
    return [v if v in default else pytest.param(v, marks=pytest.mark.slow) for v in values]


def _run(out: Path, overrides: list[str]) -> dict:
    run_stage(compose_cfg([*TINY, *FAST, *overrides], out), out)
    return json.loads((out / "metrics.json").read_text())


def _eval(folder: Path, out: Path, *extra: str) -> dict:
    from transferlab.eval import evaluate

    cfg = compose_cfg([f"ckpt_path={folder}", "trainer.enable_progress_bar=false", *extra], out, config_name="eval")
    return evaluate(cfg)


def _same_test_metrics(m: dict, got: dict) -> None:
    tested = {k: v for k, v in m.items() if k.startswith(("test/", "test_"))}
    assert tested, m
    assert {k: got.get(k) for k in tested} == tested  # exactly, not approximately


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pre")
    return out, _run(out, ["task=supervised", "data.classes=[0,1,2]"])


def test_last_ckpt_is_the_final_weights_and_summary_names_steps(pretrained):
    folder, m = pretrained
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(folder / "checkpoints" / "best.ckpt", weights_only=True)
    assert m["steps"] == 6 and last["global_step"] == m["steps"] == m["checkpoint_step"]
    assert m["checkpoint"] == "checkpoints/last.ckpt" and m["best_checkpoint"] == "checkpoints/best.ckpt"
    assert best["global_step"] == m["best_checkpoint_step"] == 4  # the one validation (epoch 2 of 3)


@pytest.mark.parametrize("case", _default_or_slow(["supervised", "contrastive", "masked", "causal_lm"], {"supervised", "contrastive"}))
def test_eval_reproduces_every_pretraining_task(case, tmp_path):
    overrides = {"supervised": ["task=supervised", "data.classes=[0,1,2]"],
                 "contrastive": ["task=contrastive", "data.classes=[0,1,2]"],
                 "masked": ["task=masked", "data.classes=[0,1,2]"],
                 "causal_lm": ["task=causal_lm", *TEXT]}[case]
    m = _run(tmp_path / "run", overrides)
    _same_test_metrics(m, _eval(tmp_path / "run", tmp_path / "ev"))


@pytest.mark.parametrize("peft", _default_or_slow(PEFT, {"full", "lora"}))
def test_eval_reproduces_finetuning_with_every_peft_method(peft, pretrained, tmp_path):
    folder, _ = pretrained
    m = _run(tmp_path / "run", ["task=finetune", f"peft={peft}", f"task.pretrained={folder}", "data.classes=[3,4]",
                                "data.labels_per_class=8"])
    assert m["peft"] == peft
    _same_test_metrics(m, _eval(tmp_path / "run", tmp_path / "ev"))


def test_pipeline_hands_off_final_weights_and_eval_reproduces_every_stage(tmp_path):
    from transferlab.runner.run import train

    cfg = compose_cfg([*TINY, "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "trainer.limit_train_batches=2",
                       "trainer.limit_val_batches=1", "task.pretrain_trainer.max_epochs=3",
                       "+task.pretrain_trainer.check_val_every_n_epoch=2", "task.target_trainer.max_epochs=3",
                       "task.target_trainer.check_val_every_n_epoch=2", "task.source.classes=[0,1,2]",
                       "task.target.classes=[3,4]"], tmp_path / "run")
    train(cfg)
    run = tmp_path / "run"
    pre = json.loads((run / "pretrain" / "metrics.json").read_text())
    assert pre["checkpoint_step"] == pre["steps"] > pre["best_checkpoint_step"]
    final = torch.load(run / "pretrain" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for stage in ("pretrain", "finetune", "linear_probe", "scratch"):
        m = json.loads((run / stage / "metrics.json").read_text())
        _same_test_metrics(m, _eval(run / stage, tmp_path / f"ev_{stage}"))
    probe = torch.load(run / "linear_probe" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    backbone = [k for k in final if k.startswith("backbone.")]
    assert backbone and all(torch.equal(final[k], probe[k]) for k in backbone)  # the final pretrained weights
    fin = json.loads((run / "finetune" / "metrics.json").read_text())
    assert fin["pretrained"].endswith("pretrain/checkpoints/last.ckpt")


def test_handoff_best_is_a_key_and_is_validated(tmp_path):
    from transferlab.config.stages import stage_config
    from transferlab.errors import ConfigError

    cfg = compose_cfg(["task.handoff=best"], tmp_path)
    assert stage_config(cfg, "finetune", tmp_path).task.pretrained == str(tmp_path / "pretrain" / "checkpoints" / "best.ckpt")
    with pytest.raises(ConfigError, match=r"task.handoff='first' is invalid: last or best"):
        stage_config(compose_cfg(["task.handoff=first"], tmp_path), "finetune", tmp_path)


def test_eval_data_overrides_replace_or_change_the_stored_data(pretrained, tmp_path):
    folder, m = pretrained
    other = _eval(folder, tmp_path / "a", "data=mnist1d", "data.classes=[5,6,7]")
    assert other["data"] == "mnist1d" and other["test/acc"] != m["test/acc"]
    two = _eval(folder, tmp_path / "b", "+data.classes=[0,1,5]")  # one key of the stored data changed
    assert two["test/acc"] != m["test/acc"]


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and ".hydra" not in p.parts}


def test_eval_refuses_a_folder_that_holds_a_run_and_locks_its_own(pretrained, tmp_path):
    """`eval hydra.run.dir=RUN` replaced a training run's metrics.json and csv/: refused before eval writes anything;
    a folder another live process holds is refused; eval's own folder is unlocked at the end and holds a run then."""
    import os
    import shutil

    from transferlab.errors import UserError

    run = tmp_path / "run"
    shutil.copytree(pretrained[0], run)
    before = _files(run)
    with pytest.raises(UserError) as err:
        _eval(run, run, "+data.generator.seed=7")
    assert str(err.value) == (f"{run} already holds a run (metrics.json); eval would replace its metrics.json, csv/ and "
                              ".hydra/: pick another hydra.run.dir")
    assert _files(run) == before and not (run / ".lock").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / ".lock").write_text(f"{os.getppid()}\n")  # a live process (pytest's parent) holds it
    with pytest.raises(UserError, match=f"{busy} is in use by another live run"):
        _eval(run, busy)
    assert sorted(p.name for p in busy.iterdir()) == [".lock"]
    _same_test_metrics(pretrained[1], _eval(run, tmp_path / "ev"))
    assert (tmp_path / "ev" / "metrics.json").is_file() and not (tmp_path / "ev" / ".lock").exists()
    with pytest.raises(UserError, match="already holds a run"):
        _eval(run, tmp_path / "ev")


def test_eval_cli_leaves_a_training_run_folder_alone(pretrained, tmp_path):
    """The audit's command line: exit 2, one `error:` line naming the folder, the run's files untouched
    (Hydra itself writes .hydra/ before the job starts)."""
    import os
    import shutil
    import sys

    import proc_helpers
    from conftest import ROOT

    run = tmp_path / "run"
    shutil.copytree(pretrained[0], run)
    before = _files(run)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = proc_helpers.run([sys.executable, "-m", "transferlab.eval", f"ckpt_path={run}", "+data.generator.seed=7",
                             f"hydra.run.dir={run}"], timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(run) in lines[0], lines
    assert "pick another hydra.run.dir" in lines[0]
    assert {p: v for p, v in _files(run).items() if p.name != "eval.log"} == before


def test_train_metrics_updated_in_blocks_equal_per_batch_updates(tmp_path, monkeypatch):
    """ClassifierTask updates train/acc, f1 and loss once every TRAIN_METRIC_BATCHES batches: the numbers must be
    those of one update per batch (epochs of 7 batches with blocks of 3: two full blocks and the epoch's rest)."""
    import csv

    from transferlab.tasks import classifier

    def train_rows(folder: Path) -> list[tuple[float, float, float]]:
        with open(folder / "csv" / "metrics.csv") as f:
            return [tuple(float(r[k]) for k in ("train/acc", "train/f1", "train/loss"))
                    for r in csv.DictReader(f) if r.get("train/acc")]

    few = ["task=supervised", "data=digits", "trainer.max_epochs=2", "trainer.limit_train_batches=7",
           "task.label_smoothing=0.1"]
    monkeypatch.setattr(classifier, "TRAIN_METRIC_BATCHES", 3)
    _run(tmp_path / "blocks", few)
    monkeypatch.setattr(classifier, "TRAIN_METRIC_BATCHES", 1)
    _run(tmp_path / "each", few)
    blocks, each = train_rows(tmp_path / "blocks"), train_rows(tmp_path / "each")
    assert len(blocks) == len(each) == 2
    for (acc, f1, loss), (acc1, f11, loss1) in zip(blocks, each):
        assert (acc, f1) == (acc1, f11) and 0 < acc < 1
        assert loss == pytest.approx(loss1, rel=1e-6) and loss > 0


def test_finetuning_a_text_checkpoint_reads_the_data_with_its_tokenizer(tmp_path):
    """The pretrained embeddings learned the ids of the checkpoint's tokenizer; a tokenizer trained again here (another
    machine, a cleared cache: training is not deterministic upstream) or with other settings would remap them silently."""
    from transferlab.runner.restore import stored_preprocessing
    from transferlab.utils.checkpoint import load_checkpoint

    def tokenizer(folder: Path) -> dict:
        return stored_preprocessing(load_checkpoint(folder / "checkpoints" / "last.ckpt"))["tokenizer"]

    _run(tmp_path / "mlm", ["task=masked", *TEXT, f"data.cache_dir={tmp_path / 'cache_a'}"])
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError) as err:  # a tokenizer setting the fine-tune cannot apply
        _run(tmp_path / "refused", ["task=finetune", "peft=full", *TEXT, "data.tokenizer.vocab_size=200",
                                    f"task.pretrained={tmp_path / 'mlm'}"])
    assert str(err.value) == (f"data.tokenizer.vocab_size=200 is invalid: task.pretrained={tmp_path / 'mlm'} brings its "
                              "own tokenizer (trained with vocab_size=300), which this fine-tune reads its data with: "
                              "drop the key, or pretrain with it")
    _run(tmp_path / "ft", ["task=finetune", "peft=full", *TEXT, f"data.cache_dir={tmp_path / 'cache_b'}",
                           f"task.pretrained={tmp_path / 'mlm'}"])
    pretrained, finetuned = tokenizer(tmp_path / "mlm"), tokenizer(tmp_path / "ft")
    assert pretrained["kind"] == "trained" and finetuned == pretrained
    assert not (tmp_path / "cache_b" / "tokenizers").exists()  # nothing was trained for the fine-tune
    # a resume reads the data with the tokenizer of the checkpoint it continues
    resumed = _run(tmp_path / "ft", ["task=finetune", "peft=full", *TEXT, "data.tokenizer.vocab_size=120",
                                     f"data.cache_dir={tmp_path / 'cache_c'}", "resume=auto", "resume_force=true", "trainer.max_epochs=4"])
    assert resumed["epochs"] == 4 and tokenizer(tmp_path / "ft") == pretrained
    assert not (tmp_path / "cache_c" / "tokenizers").exists()
