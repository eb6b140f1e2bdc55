"""Where the small model's per-step overhead goes, timed with real clocks (no profiler).

profile_step.py's cProfile slows Python code more than torch kernels, so it cannot say how many real
milliseconds transferlab adds. Here both loops mark the same boundaries of every step with
`time.perf_counter()`: the backbone's forward (hooks on the backbone in both), the backward, the
optimizer step; everything between them is the loop's own work. The plain loop is overhead.py's;
transferlab is `run_stage` with its defaults plus the `steptimer.StepParts` callback. Runs alternate
(plain, transferlab, transferlab, plain, ...); per run, the median of each part over the steps after
warm-up (steps that end an epoch, with validation and checkpoints, are excluded by the median, not by
hand). The machine's speed drifts between runs, so compare parts within a run: "loop's own work" =
step-to-step time minus forward, backward and optimizer step.

    python experiments/benchmarks/step_parts.py --threads 1      # ~2 min here (6 runs each)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ALLOWED, compose, load_averages, machine, model_overrides, write_results
from overhead import plain_parts

COMPUTE = ("backbone forward", "backward", "optimizer step")
# part -> (start mark, end mark) within a step; "next" = the next step's batch_start
TL_PARTS = {
    "dispatch to the forward (Lightning)": ("batch_start", "forward_start"),
    "backbone forward": ("forward_start", "forward_end"),
    "head, loss, metric updates, self.log, zero_grad (Lightning's closure)": ("forward_end", "backward_start"),
    "backward": ("backward_start", "backward_end"),
    "after backward, before the step (hooks)": ("backward_end", "optimizer_start"),
    "optimizer step": ("optimizer_start", "batch_end"),
    "batch end to next batch (LR scheduler, loggers, progress bar, data fetch)": ("batch_end", "next"),
}
# the plain loop has no hooks between backward and step: its optimizer step starts where the backward ends
PLAIN_PARTS = {name: (("backward_end", "batch_end") if name == "optimizer step" else span)
               for name, span in TL_PARTS.items() if name != "after backward, before the step (hooks)"}


def summarise(steps: list[dict[str, float]], parts: dict[str, tuple[str, str]], warmup: int) -> dict[str, float]:
    out = {}
    pairs = list(zip(steps, steps[1:]))[warmup:]
    for name, (a, b) in parts.items():
        out[name] = 1000 * statistics.median((nxt["batch_start"] if b == "next" else cur[b]) - cur[a] for cur, nxt in pairs)
    out["step (start to next start)"] = 1000 * statistics.median(nxt["batch_start"] - cur["batch_start"] for cur, nxt in pairs)
    out["loop's own work (step minus compute)"] = 1000 * statistics.median(
        (nxt["batch_start"] - cur["batch_start"]) - sum(cur[parts[c][1]] - cur[parts[c][0]] for c in COMPUTE) for cur, nxt in pairs)
    return out


def transferlab_steps(size: str, steps: int, threads: int, workdir: Path) -> list[dict[str, float]]:
    from steptimer import StepParts

    from transferlab.runner.stage import run_stage

    out = workdir / f"tl_{time.monotonic_ns()}"
    cfg = compose(["task=supervised", "data=mnist1d", *model_overrides(size), "trainer.max_epochs=-1",
                   f"trainer.max_steps={steps}", "trainer.limit_test_batches=1", ALLOWED, f"threads={threads}",
                   "+callbacks.bench_parts._target_=steptimer.StepParts"], out)
    run_stage(cfg, out)
    return StepParts.last.steps


def plain_steps(size: str, steps: int, workdir: Path) -> list[dict[str, float]]:
    """overhead.py's plain loop (`plain_parts`), with the same marks."""
    import torch.nn.functional as F

    backbone, model, opt, loader = plain_parts(size, workdir)
    now: dict[str, float] = {}
    backbone.register_forward_pre_hook(lambda *_: now.__setitem__("forward_start", time.perf_counter()))
    backbone.register_forward_hook(lambda *_: now.__setitem__("forward_end", time.perf_counter()))
    record: list[dict[str, float]] = []
    while len(record) < steps:
        for x, y in loader:
            now.clear()
            now["batch_start"] = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            now["backward_start"] = time.perf_counter()
            loss.backward()
            now["backward_end"] = time.perf_counter()
            opt.step()
            now["batch_end"] = time.perf_counter()
            record.append(dict(now))
            if len(record) >= steps:
                break
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small")
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=6, help="runs of each loop, alternated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    started, load0, t0 = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), load_averages(), time.perf_counter()
    runs: dict[str, list[dict]] = {"plain": [], "transferlab": []}
    with tempfile.TemporaryDirectory(prefix="tl_parts_") as tmp:
        plain_steps(args.size, 5, Path(tmp))  # first-use costs outside the measured runs
        transferlab_steps(args.size, 5, args.threads, Path(tmp))
        for i in range(args.runs):
            for who in (("plain", "transferlab") if i % 2 == 0 else ("transferlab", "plain")):
                gc.collect()
                before = load_averages()
                if who == "plain":
                    parts = summarise(plain_steps(args.size, args.steps, Path(tmp)), PLAIN_PARTS, args.warmup)
                else:
                    parts = summarise(transferlab_steps(args.size, args.steps, args.threads, Path(tmp)), TL_PARTS, args.warmup)
                runs[who].append({"ms": parts, "load_before": before, "load_after": load_averages()})
                print(who, {k.split(" (")[0]: round(v, 2) for k, v in parts.items()}, file=sys.stderr, flush=True)
    medians = {who: {k: statistics.median(r["ms"][k] for r in rs) for k in rs[0]["ms"]} for who, rs in runs.items()}
    command = "python experiments/benchmarks/step_parts.py " + " ".join(sys.argv[1:])
    write_results(f"step_parts_{args.size}", {"command": command, "machine": machine(), "started": started,
                                              "wall_s": time.perf_counter() - t0, "load_start": load0, "load_end": load_averages(),
                                              "size": args.size, "steps": args.steps, "warmup": args.warmup,
                                              "torch_threads": torch.get_num_threads(), "median_ms": medians, "runs": runs}, args.out)
    tl, plain = medians["transferlab"], medians["plain"]
    own = "loop's own work (step minus compute)"
    print(f"step_parts {args.size}: loop's own work {tl[own]:.2f} ms/step transferlab vs {plain[own]:.2f} plain "
          f"(steps {tl['step (start to next start)']:.1f} vs {plain['step (start to next start)']:.1f} ms)")


if __name__ == "__main__":
    main()
