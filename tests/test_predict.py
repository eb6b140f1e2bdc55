"""`transferlab.predict`: new inputs in every form give exactly eval's test-split probabilities,
with the preprocessing stored in the checkpoint; inputs that do not fit are one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from inference_helpers import (
    eval_probabilities,
    flat_image_folder,
    read_predictions,
    trained,
    write_csv,
)

from transferlab.errors import InputError, UserError


def predict(run, input_path, out, *extra):
    from transferlab.predict import predict as run_predict

    cfg = compose_cfg([f"ckpt_path={run}", f"input={input_path}", f"out={out}", "all_probabilities=true",
                       "progress=false", "batch_size=7", *extra], config_name="predict")
    return run_predict(cfg)


def assert_same_as_eval(run: Path, predictions: Path):
    expected, names = eval_probabilities(run)
    _, probs, labels = read_predictions(predictions, names)
    assert probs.shape == expected.shape
    assert np.abs(probs - expected).max() <= 1e-6
    assert labels == [names[i] for i in expected.argmax(1)]


def test_table_in_every_format_equals_eval(tmp_path_factory, tmp_path):
    run = trained("mlp", tmp_path_factory)
    test_csv = run.parent / "test.csv"
    out, n = predict(run, test_csv, tmp_path / "p.csv", "top_k=2")
    assert n == 30 and out.is_file()
    assert_same_as_eval(run, out)
    header = out.read_text().splitlines()[0].split(",")
    assert header == ["id", "label", "probability", "label_2", "probability_2", "p_cat", "p_dog", "p_eel"]
    ids, probs, _ = read_predictions(out, ["cat", "dog", "eel"])
    assert ids == [str(i) for i in range(30)]
    # the same rows as JSON Lines and Parquet, without the label column, with an id column
    import csv

    rows = [{"name": f"r{i}", "b": float(r["b"]), "a": float(r["a"])} for i, r in enumerate(csv.DictReader(open(test_csv)))]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for name in ("t.jsonl", "t.parquet"):
        other, _ = predict(run, tmp_path / name, tmp_path / f"{name}.csv", "id_column=name")
        other_ids, other_probs, _ = read_predictions(other, ["cat", "dog", "eel"])
        assert other_ids == [f"r{i}" for i in range(30)] and np.abs(other_probs - probs).max() <= 1e-6


@pytest.mark.parametrize("model", ["transformer", "hf"])
def test_text_file_and_text_table_equal_eval(model, tmp_path_factory, tmp_path):
    if model == "hf":
        pytest.importorskip("transformers")
    run = trained(model, tmp_path_factory)
    import csv

    texts = [r["review"] for r in csv.DictReader(open(run.parent / "test.csv"))]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    out, n = predict(run, tmp_path / "texts.txt", tmp_path / "p.csv")
    assert n == len(texts)
    assert_same_as_eval(run, out)
    table, _ = predict(run, run.parent / "test.csv", tmp_path / "t.csv")  # the run's text column, `review`
    assert_same_as_eval(run, table)


def test_flat_image_folder_equals_eval(tmp_path_factory, tmp_path):
    run = trained("cnn", tmp_path_factory)
    folder = flat_image_folder(run.parent / "test", tmp_path / "new_images")
    out, n = predict(run, folder, tmp_path / "p.csv")
    assert n == 9
    assert_same_as_eval(run, out)
    ids, _, _ = read_predictions(out, ["ant", "cat", "zebra"])
    assert ids == sorted(p.name for p in folder.iterdir())


def test_npz_equals_eval(tmp_path_factory, tmp_path):
    from transferlab.data.digits import DigitsDataModule

    run = trained("digits", tmp_path_factory)
    x_test = DigitsDataModule().load_arrays()[2]  # raw pixels in [0, 1], before the run's normalization
    np.savez_compressed(tmp_path / "new.npz", x=x_test.reshape(len(x_test), 64))  # flat rows are reshaped
    out, n = predict(run, tmp_path / "new.npz", tmp_path / "p.csv")
    assert n == len(x_test)
    assert_same_as_eval(run, out)


def test_adapter_file_and_checkpoint_of_a_lora_run_equal_eval(tmp_path_factory, tmp_path):
    pytest.importorskip("peft")
    from transferlab.data.digits import DigitsDataModule

    base = trained("digits", tmp_path_factory)
    run = trained("digits", tmp_path_factory, ("task=finetune", "peft=lora", f"task.pretrained={base}",
                                               "task.save_adapter=true", "data.classes=[0,1,2]"))
    x, y = DigitsDataModule().load_arrays()[2:]
    np.savez(tmp_path / "new.npz", x=x[np.isin(y, [0, 1, 2])])
    from_ckpt, _ = predict(run, tmp_path / "new.npz", tmp_path / "ckpt.csv")
    assert_same_as_eval(run, from_ckpt)
    adapter = run / "checkpoints" / "adapter.pt"  # the final weights (last.ckpt may be an epoch older)
    assert_same_as_eval(adapter, predict(adapter, tmp_path / "new.npz", tmp_path / "adapter.csv")[0])


def test_checkpoint_without_stored_preprocessing_still_predicts(tmp_path_factory, tmp_path):
    """A checkpoint written before `preprocessing` was stored: its data config is set up once instead."""
    run = trained("mlp", tmp_path_factory)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    for value in ckpt.values():
        if isinstance(value, dict):
            value.pop("preprocessing", None)
    torch.save(ckpt, tmp_path / "old.ckpt")
    out, _ = predict(tmp_path / "old.ckpt", run.parent / "test.csv", tmp_path / "p.csv")
    assert_same_as_eval(run, out)


def test_untrusted_targets_are_refused(tmp_path_factory, tmp_path):
    run = trained("mlp", tmp_path_factory)
    with pytest.raises(UserError, match="allowed_targets"):
        predict(run, run.parent / "test.csv", tmp_path / "p.csv", "allowed_targets=[torch.optim.]")
    assert not (tmp_path / "p.csv").exists()


def test_inputs_that_do_not_fit_are_one_line_errors(tmp_path_factory, tmp_path):
    mlp, cnn, text = (trained(n, tmp_path_factory) for n in ("mlp", "cnn", "transformer"))
    write_csv(tmp_path / "missing.csv", ["a", "c"], [[1, 2]])
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    write_csv(tmp_path / "nan.csv", ["a", "b"], [[1, ""]])
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 5)))
    cases = [
        (mlp, tmp_path / "missing.csv", r"feature column\(s\) \['b'\] are missing"),
        (mlp, tmp_path / "empty.csv", "the file is empty"),
        (mlp, tmp_path / "header.csv", "no rows"),
        (mlp, tmp_path / "nan.csv", "row 0: column 'b' holds '', not a number"),
        (mlp, tmp_path / "wrong.npz", r"shape \[5\]; the model reads \[2\]"),
        (mlp, tmp_path / "nope.csv", "no such file"),
        (mlp, tmp_path / "x.xlsx", "no such file"),
        (text, tmp_path / "wrong.npz", "not arrays"),
        (cnn, cnn.parent / "test", "give a flat folder of images"),
    ]
    for run, input_path, message in cases:
        with pytest.raises(InputError, match=message) as err:
            predict(run, input_path, tmp_path / "p.csv")
        assert "\n" not in str(err.value)
    (tmp_path / "x.xlsx").write_text("a")
    with pytest.raises(InputError, match="read are tables"):
        predict(mlp, tmp_path / "x.xlsx", tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_images_of_another_size_are_refused_without_resizing():
    from PIL import Image

    from transferlab.inference.preprocess import Preprocessor

    state = {"spec": {"modality": "image", "input_shape": [3, 8, 8], "class_names": ["a", "b"]},
             "normalization": [0.5, 0.2], "channels": 3, "resize": False}
    import io

    buf = io.BytesIO()
    Image.new("RGB", (12, 10)).save(buf, format="PNG")
    with pytest.raises(InputError, match="is 10x12 pixels; the model was trained on 8x8"):
        Preprocessor(state).encode([buf.getvalue()], "image")
    assert Preprocessor({**state, "resize": True}).encode([buf.getvalue()], "image").shape == (1, 3, 8, 8)


def test_a_file_with_broken_preprocessing_is_refused(tmp_path_factory, tmp_path):
    """The stored preprocessing is data from the file: non-finite statistics or a foreign spec are one line."""
    from transferlab.errors import CheckpointError

    run = trained("mlp", tmp_path_factory)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v["preprocessing"] for v in ckpt.values() if isinstance(v, dict) and "preprocessing" in v)
    state["feature_std"][1] = float("nan")
    torch.save(ckpt, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"preprocessing.feature_std\[1\] is not finite"):
        predict(tmp_path / "nan.ckpt", run.parent / "test.csv", tmp_path / "p.csv")
    state["feature_std"][1] = 1.0
    state["spec"]["code"] = "os.system"
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="preprocessing.spec is not a data spec"):
        predict(tmp_path / "odd.ckpt", run.parent / "test.csv", tmp_path / "p.csv")


def test_out_is_replaced_only_with_overwrite_and_a_runs_record_never(tmp_path_factory, tmp_path):
    """The audit replaced a run's metrics.json with predictions: an existing `out` needs overwrite=true, and a
    run's own record (metrics.json, *.ckpt, adapter.pt) is refused even then, whether or not it exists yet."""
    import shutil

    from transferlab.errors import ConfigError

    run = tmp_path / "run"
    shutil.copytree(trained("mlp", tmp_path_factory), run)
    test_csv = trained("mlp", tmp_path_factory).parent / "test.csv"
    mine = tmp_path / "p.csv"
    mine.write_text("mine\n")
    with pytest.raises(UserError) as err:
        predict(run, test_csv, mine)
    assert str(err.value) == f"out={mine}: {mine} already exists: set overwrite=true to replace it, or choose another out="
    assert mine.read_text() == "mine\n"
    assert predict(run, test_csv, mine, "overwrite=true") == (mine, 30)
    assert_same_as_eval(run, mine)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for record in (run / "metrics.json", run / "checkpoints" / "last.ckpt", run / "checkpoints" / "adapter.pt",
                   tmp_path / "new" / "metrics.json", tmp_path / "new.ckpt"):
        with pytest.raises(UserError) as err:
            predict(run, test_csv, record, "overwrite=true")
        assert str(err.value) == (f"out={record}: {record.name} is a run's own record (metrics.json, adapter.pt, *.ckpt) "
                                  "and is never replaced, even with overwrite=true: choose another out=")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.ckpt").exists()
    with pytest.raises(UserError, match=f"out={tmp_path}: {tmp_path} is a folder: name a file"):
        predict(run, test_csv, tmp_path, "overwrite=true")
    with pytest.raises(ConfigError, match="overwrite='yes' is invalid: true or false"):
        predict(run, test_csv, tmp_path / "q.csv", "overwrite=yes")


def test_a_full_disk_names_out_not_the_temporary_file(tmp_path_factory, tmp_path, monkeypatch):
    """runner/entry.py's generic message named `.p.csv.PID.tmp` and advised hydra.run.dir / resume=auto."""
    import errno
    import os

    import transferlab.utils.io

    run = trained("mlp", tmp_path_factory)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(transferlab.utils.io.os, "fsync", full)
    out = tmp_path / "p.csv"
    with pytest.raises(UserError) as err:
        predict(run, run.parent / "test.csv", out)
    assert str(err.value) == f"disk full while writing {out} (out={out}): free space there or choose another out="
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_cli_refuses_a_runs_metrics_json_in_one_line(tmp_path_factory, tmp_path):
    import os
    import shutil
    import sys

    import proc_helpers
    from conftest import ROOT

    run = tmp_path / "run"
    shutil.copytree(trained("mlp", tmp_path_factory), run)
    test_csv = trained("mlp", tmp_path_factory).parent / "test.csv"
    before = (run / "metrics.json").read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = proc_helpers.run([sys.executable, "-m", "transferlab.predict", f"ckpt_path={run}", f"input={test_csv}",
                             f"out={run / 'metrics.json'}"], timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [f"error: out={run / 'metrics.json'}: metrics.json is a run's own record "
                                               "(metrics.json, adapter.pt, *.ckpt) and is never replaced, even with "
                                               "overwrite=true: choose another out="]
    assert (run / "metrics.json").read_bytes() == before


def test_damaged_or_non_regular_npz_inputs_are_one_line_before_a_row_is_read(tmp_path):
    """A truncated archive, a header claiming more rows than the data (or 10**12 of them), a symlink to /dev/zero:
    each one InputError naming input=, never numpy's or zipfile's traceback, never a read of /dev/zero."""
    import io
    import os
    import zipfile

    from transferlab.inference.inputs import count_items, read_batches

    def npz_with_header(path: Path, rows: int, data_rows: int) -> Path:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (rows, 2)})
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", header.getvalue() + np.zeros((data_rows, 2), "<f4").tobytes())
        return path

    good = tmp_path / "good.npz"
    np.savez(good, x=np.arange(80, dtype=np.float32).reshape(40, 2))
    assert count_items(good) == 40 and sum(len(ids) for ids, _, _ in read_batches(good, 16)) == 40
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:200])
    os.symlink("/dev/zero", tmp_path / "zero.npz")
    cases = [
        (npz_with_header(tmp_path / "more.npz", 40, 20), "x's header says shape [40, 2] of float32 (320 bytes), but the "
                                                        "archive holds 160 bytes of data (truncated or edited?)"),
        (npz_with_header(tmp_path / "huge.npz", 10**12, 20), "x's header says shape [1000000000000, 2] of float32 "
                                                            "(8,000,000,000,000 bytes), but the archive holds 160 bytes"),
        (tmp_path / "cut.npz", "not a readable .npz archive (File is not a zip file)"),
        (tmp_path / "zero.npz", "not a regular file or a folder but a character device (a symlink to '/dev/zero')"),
    ]
    for path, message in cases:
        for read in (lambda p: next(read_batches(p, 16)), count_items):
            with pytest.raises(InputError) as err:
                read(path)
            assert str(err.value).startswith(f"input={str(path)!r}: ") and message in str(err.value), str(err.value)
