"""Serving: requests/s and per-request latency (p50, p99) of `python -m transferlab.serve` on loopback.

The model is the quickstart's fine-tuned classifier (`python -m transferlab.train`, its finetune/
stage: MNIST-1D, model=cnn), trained here unless `--ckpt` names a run. A server process is started on
a free 127.0.0.1 port (its own process group, stopped at the end); for each concurrency level a
bounded number of requests (one example each, random arrays of the model's input shape) are sent by
that many client threads, `--repeats` times. Latency is measured by the client (send -> answer).

    python experiments/benchmarks/serve.py [--ckpt RUN] [--requests 400] [--concurrency 1 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import ROOT, load_average, machine, median, print_table, write_results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes) -> float:
    start = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        assert r.status == 200
    return time.perf_counter() - start


def quickstart_run(folder: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-m", "transferlab.train", f"hydra.run.dir={folder}",
                    "trainer.enable_progress_bar=false"], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder / "finetune"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", help="a classifier run folder or checkpoint (default: train the quickstart)")
    ap.add_argument("--requests", type=int, default=400, help="requests per concurrency level and repeat")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5)
    ap.add_argument("--out", help="results file (default results/serve.json)")
    args = ap.parse_args()
    load_start = load_average()
    tmp = tempfile.TemporaryDirectory()
    ckpt = Path(args.ckpt) if args.ckpt else quickstart_run(Path(tmp.name) / "quickstart")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "transferlab.serve", f"ckpt_path={ckpt}", f"port={port}",
                             f"max_batch_size={args.max_batch_size}", f"max_wait_ms={args.max_wait_ms}"],
                            env=env, cwd=tmp.name, start_new_session=True, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    raw, rows = [], []
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.5)
        rng = np.random.default_rng(0)
        bodies = [json.dumps({"inputs": [rng.normal(size=health["input_shape"]).round(4).tolist()]}).encode()
                  for _ in range(64)]
        for body in bodies[:20]:  # warm-up
            post(f"{url}/predict", body)
        for concurrency in args.concurrency:
            for repeat in range(args.repeats):
                with ThreadPoolExecutor(concurrency) as pool:
                    start = time.perf_counter()
                    latencies = list(pool.map(lambda i: post(f"{url}/predict", bodies[i % len(bodies)]), range(args.requests)))
                    wall = time.perf_counter() - start
                ms = np.asarray(latencies) * 1000
                raw.append({"concurrency": concurrency, "repeat": repeat, "requests": args.requests, "wall_s": wall,
                            "latency_ms": [round(float(v), 3) for v in ms]})
            runs = [r for r in raw if r["concurrency"] == concurrency]
            rps = [r["requests"] / r["wall_s"] for r in runs]
            p50 = [float(np.percentile(r["latency_ms"], 50)) for r in runs]
            p99 = [float(np.percentile(r["latency_ms"], 99)) for r in runs]
            rows.append({"concurrency": concurrency, "requests/s (median)": median(rps),
                         "requests/s (min-max)": f"{min(rps):.0f}-{max(rps):.0f}", "p50 ms (median)": median(p50),
                         "p99 ms (median)": median(p99), "p99 ms (min-max)": f"{min(p99):.1f}-{max(p99):.1f}"})
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            batches = json.loads(r.read())["batches"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        tmp.cleanup()
    table = print_table(rows)
    write_results("serve", {"machine": machine(), "load_average": {"start": load_start, "end": load_average()},
                            "model": "quickstart finetune/ (mnist1d, model=cnn)" if not args.ckpt else str(ckpt),
                            "settings": vars(args), "forward_passes": batches, "summary": rows, "table": table,
                            "raw": raw}, args.out)


if __name__ == "__main__":
    main()
