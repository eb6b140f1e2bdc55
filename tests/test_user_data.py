"""Bring your own data: tables (CSV/JSONL/Parquet; text or numeric), image folders, HF `datasets`."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, compose_cfg

from transferlab.errors import ConfigError, UserError


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def numeric_csv(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        label = [2, 10, 1][i % 3]  # numeric labels: ids by value (1 -> 0, 2 -> 1, 10 -> 2), not as strings
        rows.append([round(label + rng.normal(0, 0.1), 4), round(1000 * rng.random(), 2), "x", label])
    return write_csv(tmp_path / "num.csv", ["a", "b", "city", "y"], rows)


@pytest.fixture
def text_csv(tmp_path) -> Path:
    words = {"pos": "good great lovely fine", "neg": "bad awful dull poor"}
    rows = [[f"a {words[lab].split()[i % 4]} film, {words[lab].split()[(i + 1) % 4]} acting", lab]
            for i in range(40) for lab in ("pos", "neg")]
    return write_csv(tmp_path / "reviews.csv", ["review", "sentiment"], rows)


def datamodule(overrides: list[str], tmp_path: Path):
    from transferlab.runner.build import build_datamodule

    dm = build_datamodule(compose_cfg(overrides, tmp_path / "out"))
    dm.setup("fit")
    return dm


def test_numeric_csv_features_labels_and_run(numeric_csv, tmp_path):
    from transferlab.runner.stage import run_stage

    dm = datamodule(["data=csv", f"data.path={numeric_csv}", "data.label_column=y"], tmp_path)
    spec = dm.spec
    assert spec.modality == "tabular" and spec.input_shape == (2,) and dm.feature_names == ["a", "b"]
    assert spec.class_names == ("1", "2", "10") and spec.vocab_size is None
    x, y = dm.train_set.tensors
    assert x.dtype.is_floating_point
    # feature "a" is the label's value plus noise: the ids must follow the numeric order
    raw = {int(r["y"]): float(r["a"]) for r in csv.DictReader(open(numeric_csv))}
    assert sorted(raw) == [1, 2, 10]
    means = [x[y == c, 0].mean().item() for c in range(3)]
    assert means[0] < means[1] < means[2]
    counts = np.bincount(dm.test_set.tensors[1].numpy()).tolist()
    assert counts == [4, 4, 4]  # a fixed 20% of each class
    out = tmp_path / "run"
    summary = run_stage(compose_cfg(["task=supervised", "model=mlp", "data=csv", f"data.path={numeric_csv}",
                                     "data.label_column=y", *FAST], out), out)
    assert summary["data"] == "csv" and (out / "metrics.json").is_file() and 0 <= summary["test/acc"] <= 1


def test_jsonl_json_and_parquet_read_like_csv(numeric_csv, tmp_path):
    from transferlab.data.tabular import read_table

    cols = read_table(numeric_csv)
    rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({**r, "a": float(r["a"]), "y": int(r["y"])}) for r in rows) + "\n")
    (tmp_path / "t.json").write_text(json.dumps(rows))
    base = datamodule(["data=csv", f"data.path={numeric_csv}", "data.label_column=y"], tmp_path)
    for name in ("t.jsonl", "t.json"):
        other = datamodule(["data=csv", f"data.path={tmp_path / name}", "data.label_column=y"], tmp_path)
        assert other.spec == base.spec
        assert np.allclose(other.train_set.tensors[0].numpy(), base.train_set.tensors[0].numpy(), atol=1e-5)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"a": [float(v) for v in cols["a"]], "b": [float(v) for v in cols["b"]],
                             "y": [int(v) for v in cols["y"]]}), tmp_path / "t.parquet")
    other = datamodule(["data=csv", f"data.path={tmp_path / 't.parquet'}", "data.label_column=y"], tmp_path)
    assert np.allclose(other.train_set.tensors[0].numpy(), base.train_set.tensors[0].numpy(), atol=1e-5)


def test_text_csv_tokenized_and_trained(text_csv, tmp_path):
    from transferlab.runner.stage import run_stage

    over = ["data=csv", f"data.path={text_csv}", "data.text_column=review", "data.label_column=sentiment",
            "data.max_length=12", "data.tokenizer.vocab_size=100"]
    dm = datamodule(over, tmp_path)
    spec = dm.spec
    assert spec.modality == "text" and spec.input_shape == (12,) and spec.class_names == ("neg", "pos")
    assert spec.vocab_size == dm.vocab_size and spec.pad_id == dm.pad_id and dm.mask_id is not None
    x = dm.train_set.tensors[0]
    assert str(x.dtype) == "torch.int64" and x.max() < spec.vocab_size
    assert dm.decode(x[0]).startswith("a ")
    out = tmp_path / "run"
    summary = run_stage(compose_cfg(["task=supervised", "model=transformer", "model.width=16", "model.depth=1",
                                     "model.heads=2", *over, *FAST], out), out)
    assert summary["data"] == "csv" and 0 <= summary["test/acc"] <= 1


def test_separate_test_file(text_csv, tmp_path):
    test = write_csv(tmp_path / "test.csv", ["review", "sentiment"], [["good film", "pos"], ["awful acting", "neg"], ["fine", "pos"]])
    dm = datamodule(["data=csv", f"data.path={text_csv}", f"data.test_path={test}", "data.text_column=review",
                     "data.label_column=sentiment", "data.max_length=8"], tmp_path)
    assert dm.test_set.tensors[1].tolist() == [1, 0, 1]
    assert len(dm.train_set) + len(dm.val_set) == 80


def test_table_errors_name_the_key_and_what_exists(text_csv, tmp_path):
    base = ["data=csv", "data.label_column=sentiment"]
    with pytest.raises(UserError, match="no such file"):
        datamodule([*base, f"data.path={tmp_path / 'missing.csv'}"], tmp_path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        datamodule([*base, f"data.path={tmp_path / 'empty.csv'}"], tmp_path)
    (tmp_path / "header.csv").write_text("review,sentiment\n")
    with pytest.raises(UserError, match="no rows"):
        datamodule([*base, f"data.path={tmp_path / 'header.csv'}"], tmp_path)
    with pytest.raises(ConfigError) as err:
        datamodule(["data=csv", f"data.path={text_csv}", "data.label_column=label", "data.text_column=review"], tmp_path)
    assert err.value.key == "data.label_column" and "['review', 'sentiment']" in str(err.value)
    with pytest.raises(ConfigError) as err:
        datamodule([*base, f"data.path={text_csv}", "data.text_column=body"], tmp_path)
    assert err.value.key == "data.text_column" and "'review'" in str(err.value)
    with pytest.raises(UserError, match="no numeric feature column"):
        datamodule([*base, f"data.path={text_csv}"], tmp_path)
    with pytest.raises(ConfigError, match="data.path"):
        datamodule([*base, f"data.path={tmp_path / 'table.xlsx'}"], tmp_path)


@pytest.fixture
def image_root(tmp_path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["zebra", "ant", "cat"]):  # sorted ids: ant 0, cat 1, zebra 2
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(5):
            pixels = (rng.random((10, 12, 3)) * 60 + 90 * c).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{i}.png")
    return tmp_path / "imgs"


def test_image_folder(image_root, tmp_path):
    from transferlab.runner.stage import run_stage

    dm = datamodule(["data=image_folder", f"data.path={image_root}", "data.image_size=[8,8]", "data.test_fraction=0.4",
                     "data.val_fraction=0.34"], tmp_path)
    assert dm.spec.modality == "image" and dm.spec.input_shape == (3, 8, 8) and dm.spec.class_names == ("ant", "cat", "zebra")
    assert np.bincount(dm.test_set.tensors[1].numpy()).tolist() == [2, 2, 2]
    assert len(dm.train_set) + len(dm.val_set) == 9
    grey = datamodule(["data=image_folder", f"data.path={image_root}", "data.channels=1"], tmp_path)
    assert grey.spec.input_shape == (1, 10, 12)
    out = tmp_path / "run"
    summary = run_stage(compose_cfg(["task=supervised", "model=cnn", "data=image_folder", f"data.path={image_root}",
                                     "data.image_size=8", "data.val_fraction=0.34", *FAST], out), out)
    assert summary["data"] == "image_folder" and (out / "metrics.json").is_file()
    with pytest.raises(UserError, match="no such folder"):
        datamodule(["data=image_folder", f"data.path={tmp_path / 'nope'}"], tmp_path)
    (image_root / "empty_class").mkdir()
    with pytest.raises(UserError, match="'empty_class' has no images"):
        datamodule(["data=image_folder", f"data.path={image_root}"], tmp_path)


def test_hf_datasets_on_local_files(text_csv, tmp_path):
    pytest.importorskip("datasets")
    common = ["data.text_column=review", "data.label_column=sentiment", "data.max_length=12"]
    via_hf = datamodule(["data=hf", "data.dataset=csv", f"data.data_files={text_csv}", "data.test_split=null", *common], tmp_path)
    via_csv = datamodule(["data=csv", f"data.path={text_csv}", *common], tmp_path)
    assert via_hf.spec.class_names == via_csv.spec.class_names == ("neg", "pos")
    for split in ("train_set", "val_set", "test_set"):
        assert getattr(via_hf, split).tensors[1].equal(getattr(via_csv, split).tensors[1])
    assert via_hf.spec.modality == "text" and via_hf.spec.vocab_size == via_csv.spec.vocab_size
    # JSON Lines with separate train/test files through the json builder
    rows = list(csv.DictReader(open(text_csv)))
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:60]))
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[60:]))
    dm = datamodule(["data=hf", "data.dataset=json", f"+data.data_files={{train: {tmp_path / 'train.jsonl'}, test: {tmp_path / 'test.jsonl'}}}",
                     *common], tmp_path)
    assert len(dm.test_set) == 20 and len(dm.train_set) + len(dm.val_set) == 60
    with pytest.raises(ConfigError) as err:
        datamodule(["data=hf", "data.dataset=csv", f"data.data_files={text_csv}", *common], tmp_path)
    assert err.value.key == "data.test_split" and "['train']" in str(err.value)
    (tmp_path / "zero.csv").symlink_to("/dev/zero")  # datasets said "Unable to find" (and would read it forever)
    with pytest.raises(UserError) as err:
        datamodule(["data=hf", "data.dataset=csv", f"+data.data_files={{train: [{text_csv}, {tmp_path / 'zero.csv'}]}}",
                    *common], tmp_path)
    assert str(err.value) == (f"data.data_files={str(tmp_path / 'zero.csv')!r}: not a regular file but a character device (a "
                              "symlink to '/dev/zero'); expected a CSV/JSON/Parquet file, a list of them, or a glob pattern")


# -- untrusted files: what a path is, and arrays checked against their headers (data/user_files.py) ---------

@pytest.fixture
def deadline():
    """Fail (not hang) if a check regresses into reading /dev/zero or opening a FIFO, which never return."""
    import signal

    def expired(signum, frame):
        raise TimeoutError("a non-regular file was read or opened")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_non_regular_data_paths_say_what_they_are(image_root, tmp_path, deadline):
    import os

    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "gone.csv")
    what = {"zero.csv": "a character device (a symlink to '/dev/zero')", "pipe.csv": "a FIFO (named pipe)",
            "folder.csv": "a directory", "dangling.csv": f"a broken symlink (to {str(tmp_path / 'gone.csv')!r})"}
    for name, kind in what.items():
        path = tmp_path / name
        with pytest.raises(UserError) as err:
            datamodule(["data=csv", f"data.path={path}"], tmp_path)
        assert str(err.value) == f"data.path={str(path)!r}: not a regular file but {kind}; expected a CSV file"
    with pytest.raises(UserError) as err:
        datamodule(["data=image_folder", f"data.path={tmp_path / 'zero.csv'}"], tmp_path)
    assert str(err.value) == (f"data.path={str(tmp_path / 'zero.csv')!r}: not a folder but a character device (a symlink to "
                              "'/dev/zero'); expected a folder with one subfolder of images per class")
    os.mkfifo(image_root / "ant" / "9.png")  # was silently left out of the data set
    with pytest.raises(UserError) as err:
        datamodule(["data=image_folder", f"data.path={image_root}"], tmp_path)
    assert str(err.value) == (f"data.path={str(image_root)!r}: ant/9.png is not a regular file but a FIFO (named pipe); "
                              "expected image files (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff)")


def test_damaged_parquet_and_image_bomb_are_one_line(image_root, tmp_path):
    pytest.importorskip("pyarrow.parquet")
    (tmp_path / "t.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(UserError) as err:
        datamodule(["data=csv", f"data.path={tmp_path / 't.parquet'}"], tmp_path)
    assert str(err.value).startswith(f"data.path={str(tmp_path / 't.parquet')!r}: not a readable Parquet file (")
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0))  # 2.5e9 pixels in 70 bytes
    bomb = image_root / "cat" / "9.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    with pytest.raises(UserError) as err:
        datamodule(["data=image_folder", f"data.path={image_root}"], tmp_path)
    assert str(err.value).startswith(f"cannot read image {bomb}: Image size (2500000000 pixels) exceeds limit")


def _npy(shape: tuple, data: np.ndarray) -> bytes:
    """An .npy whose header says `shape` over `data`'s bytes (np.save, header edited; same header length)."""
    import io

    buf = io.BytesIO()
    np.save(buf, data)
    raw = buf.getvalue()
    size = int.from_bytes(raw[8:10], "little")
    header = repr({"descr": data.dtype.str, "fortran_order": False, "shape": shape}).encode("latin1")
    return raw[:10] + header.ljust(size - 1) + b"\n" + raw[10 + size:]


def test_npz_and_npy_headers_are_checked_before_anything_is_read(tmp_path):
    import zipfile

    from transferlab.data.user_files import read_npz

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.savez_compressed(tmp_path / "good.npz", x=x, y=np.arange(20))
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    got = read_npz(tmp_path / "good.npz", "k", "v")
    assert got.keys() == {"x", "y"} and np.array_equal(got["x"], x) and got["x"].dtype == x.dtype
    assert np.array_equal(read_npz(tmp_path / "f.npy", "k", "v")[""], x)

    def refused(path: Path) -> str:
        with pytest.raises(UserError) as err:
            read_npz(path, "data.path", "numeric arrays")
        return str(err.value)

    where = lambda name, member="": f"data.path={str(tmp_path / name)!r}" + (f" array {member!r}" if member else "")  # noqa: E731
    for name, shape in (("over", (40, 2)), ("huge", (10**12, 2))):  # an edited header; a "zip bomb" claiming 10**12 rows
        claimed = shape[0] * 2 * 4
        (tmp_path / f"{name}.npy").write_bytes(_npy(shape, x))
        with zipfile.ZipFile(tmp_path / f"{name}.npz", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("x.npy", _npy(shape, x))
        says = f"its header says shape {list(shape)} of float32 ({claimed:,} bytes), but the file holds 160 bytes of data"
        assert refused(tmp_path / f"{name}.npy") == f"{where(name + '.npy')}: {says} (truncated or edited?); expected numeric arrays"
        assert refused(tmp_path / f"{name}.npz") == f"{where(name + '.npz', 'x')}: {says} (truncated or edited?); expected numeric arrays"
    good = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    assert refused(tmp_path / "cut.npz") == f"{where('cut.npz')}: not a readable .npz archive (File is not a zip file); expected numeric arrays"
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    assert refused(tmp_path / "obj.npz") == (f"{where('obj.npz', 'x')}: holds Python objects (pickled data), which are never "
                                             "loaded; expected numeric arrays")
    # a deflated member whose recorded size is more than deflate can produce from its compressed bytes
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", _npy((20, 2), x))
    raw = bytearray((tmp_path / "bomb.npz").read_bytes())
    info = zipfile.ZipFile(tmp_path / "bomb.npz").getinfo("x.npy")
    for at in (22, raw.rindex(b"PK\x01\x02") + 24):  # uncompressed size: local header, central directory
        raw[at : at + 4] = (2**31).to_bytes(4, "little")
    (tmp_path / "bomb.npz").write_bytes(bytes(raw))
    assert refused(tmp_path / "bomb.npz") == (
        f"{where('bomb.npz', 'x')}: the archive records {2**31:,} bytes from {info.compress_size:,} compressed in a "
        f"{len(raw):,}-byte file, which is not possible (a zip bomb or a damaged file); expected numeric arrays")


def test_damaged_cache_is_rebuilt_and_a_non_regular_one_refused(tmp_path):
    from transferlab.data.mnist1d import GENERATOR_DEFAULTS, generate

    args = {**GENERATOR_DEFAULTS, "num_samples": 100}
    first = generate(args, tmp_path)
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    cache.write_bytes(cache.read_bytes()[:1000])  # np.load raised zipfile.BadZipFile: a traceback
    again = generate(args, tmp_path)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    with np.load(cache) as rebuilt:
        assert np.array_equal(rebuilt["x"], first["x"])
    cache.unlink()
    cache.symlink_to("/dev/zero")  # np.load raised "pickled (object) data ... allow_pickle"
    with pytest.raises(UserError) as err:
        generate(args, tmp_path)
    assert str(err.value) == (f"cache file {str(cache)!r}: not a regular file but a character device (a symlink to "
                              "'/dev/zero'); remove it, or set data.cache_dir to a folder of your own")
