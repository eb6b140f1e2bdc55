"""`transferlab.serve`: a real server process on a free loopback port answers like `predict` (a burst of
concurrent requests included), refuses bad input with 4xx, and leaves no process behind."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import ROOT, compose_cfg
from inference_helpers import read_predictions, trained
from proc_helpers import assert_no_group_left, started

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_answers_like_predict_and_refuses_bad_input(tmp_path_factory, tmp_path):
    from transferlab.predict import predict

    run = trained("mlp", tmp_path_factory)
    test_csv = run.parent / "test.csv"
    cfg = compose_cfg([f"ckpt_path={run}", f"input={test_csv}", f"out={tmp_path / 'p.csv'}", "all_probabilities=true",
                       "progress=false"], config_name="predict")
    _, expected, labels = read_predictions(predict(cfg)[0], ["cat", "dog", "eel"])
    import csv

    rows = [{"a": r["a"], "b": float(r["b"])} for r in csv.DictReader(open(test_csv))]  # strings and numbers both parse

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    url = f"http://127.0.0.1:{port}"
    with started([sys.executable, "-m", "transferlab.serve", f"ckpt_path={run}", f"port={port}", "max_wait_ms=20"],
                 cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                status, health = call(f"{url}/health")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "server did not start in 180 s"
                time.sleep(0.5)
        assert status == 200 and health["status"] == "ok" and health["classes"] == ["cat", "dog", "eel"]

        # malformed: not JSON, not {"inputs": [...]}, a missing column, a wrong kind, mixed kinds, empty
        assert call(f"{url}/predict", raw=b"{not json")[0] == 422
        assert call(f"{url}/predict", {"rows": rows[:1]})[0] == 422
        status, body = call(f"{url}/predict", {"inputs": [{"a": 1.0}]})
        assert status == 400 and "feature column(s) ['b'] are missing" in body["error"]
        assert call(f"{url}/predict", {"inputs": ["a text"]})[0] == 400
        assert call(f"{url}/predict", {"inputs": [rows[0], [1.0, 2.0]]})[0] == 400
        assert call(f"{url}/predict", {"inputs": []})[0] == 400
        assert call(f"{url}/predict", {"inputs": [{"a": "x", "b": 1}]})[0] == 400

        # a concurrent burst: 120 requests of one row each (batched by the server), and one of all rows
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: call(f"{url}/predict", {"inputs": [rows[i % len(rows)]], "top_k": 3}),
                                    range(120)))
        assert all(status == 200 for status, _ in answers)
        for i, (_, body) in enumerate(answers):
            (p,) = body["predictions"]
            k = i % len(rows)
            assert p["label"] == labels[k] and abs(p["probability"] - expected[k].max()) <= 1e-6
            got = {t["label"]: t["probability"] for t in p["top"]}
            assert np.allclose([got[c] for c in ["cat", "dog", "eel"]], expected[k], atol=1e-6)
        status, body = call(f"{url}/predict", {"inputs": rows})
        assert status == 200 and [p["label"] for p in body["predictions"]] == labels
        assert call(f"{url}/health")[1]["batches"] < 121  # some requests shared a forward pass
        os.killpg(proc.pid, signal.SIGTERM)  # stopped as a user would: it exits by itself
        assert proc.wait(timeout=60) is not None
    assert_no_group_left(proc.pid)  # nothing of the server's process group is left
