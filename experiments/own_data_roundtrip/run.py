"""Times the README's own-data round trip (train -> predict -> export -> serve on a table of numbers,
a text file and an image folder), running each command exactly as README.md shows it.

    python experiments/own_data_roundtrip/run.py [--work outputs/own_data]

Writes results.json here (each command, its exit code and wall seconds, machine load) and prints a table.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

COMMANDS = [
    "python -m transferlab.train task=supervised model=mlp data=csv data.path=iris.csv data.label_column=species hydra.run.dir=runs/iris",
    "python -m transferlab.predict ckpt_path=runs/iris input=new_flowers.csv id_column=flower top_k=2 out=flowers.csv",
    "python -m transferlab.export ckpt_path=runs/iris format=onnx out=iris.onnx",
    "python -m transferlab.train task=supervised model=transformer data=csv data.path=news.csv data.text_column=text "
    "data.label_column=topic data.max_length=128 trainer.max_epochs=5 hydra.run.dir=runs/news",
    "python -m transferlab.predict ckpt_path=runs/news input=new_articles.txt out=articles.csv",
    "python -m transferlab.export ckpt_path=runs/news format=torch_export out=news.pt2",
    "python -m transferlab.train task=supervised model=cnn data=image_folder data.path=digit_images data.channels=1 "
    "hydra.run.dir=runs/digits",
    "python -m transferlab.predict ckpt_path=runs/digits input=new_digits out=digits.csv",
    "python -m transferlab.export ckpt_path=runs/digits format=onnx out=digits.onnx",
]
SERVE = "python -m transferlab.serve ckpt_path=runs/iris port={port}"
REQUEST = {"inputs": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(ROOT / "outputs" / "own_data"))
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    work = Path(args.work)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, str(HERE / "make_data.py"), str(work)], check=True, env=env)
    results = []
    for command in COMMANDS:
        start = time.perf_counter()
        done = subprocess.run(command.replace("python ", f"{sys.executable} ", 1).split(), cwd=work, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        last = (done.stdout.strip().splitlines() or [""])[-1] if done.returncode == 0 else done.stderr.strip()[-500:]
        results.append({"command": command, "rc": done.returncode, "wall_s": round(wall, 1), "last_line": last})
        print(f"{wall:6.1f} s  rc={done.returncode}  {command}\n         {last}", flush=True)
    # serve: start -> /health answers, then one POST /predict; stopped with SIGTERM to its process group
    start = time.perf_counter()
    proc = subprocess.Popen(SERVE.format(port=args.port).replace("python ", f"{sys.executable} ", 1).split(), cwd=work,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/health", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - start > 300:
                    raise SystemExit("serve did not start") from None
                time.sleep(0.25)
        ready = time.perf_counter() - start
        req = urllib.request.Request(f"http://127.0.0.1:{args.port}/predict", data=json.dumps(REQUEST).encode(),
                                     headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    results.append({"command": SERVE.format(port=args.port), "rc": 0, "wall_s": round(ready, 1),
                    "last_line": f"ready (GET /health) after {ready:.1f} s; POST /predict -> {json.dumps(answer)}"})
    print(f"{ready:6.1f} s  serve ready; {json.dumps(answer)}")
    payload = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(), "load_average_end": os.getloadavg()[0],
               "results": results}
    (HERE / "results.json").write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
