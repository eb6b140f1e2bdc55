"""Where a training step's time goes: transferlab's run_stage vs the plain loop, under cProfile.

Same model, data, batch, seed and torch threads as overhead.py. The profile's cumulative times are
grouped into buckets (model forward, metric updates, `self.log`, backward, optimizer, callbacks,
data fetching, the rest of Lightning's loop) and divided by the number of steps. cProfile slows
Python code more than torch kernels, so read the buckets relative to each other, not as absolute
timings (which is also why this profile is usable on a loaded machine).

    python experiments/benchmarks/profile_step.py --size small --threads 1     # ~2 min here
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from common import load_averages, machine, write_results
from overhead import plain_rate, transferlab_rate

# bucket -> (path suffix, function name) whose cumulative time it takes. The buckets below "fit" do
# not nest in one another, except "AdamW step", which contains Lightning's closure (`_wrap_closure`:
# forward, loss, metrics, log, zero_grad, backward, hooks); its own part is step minus closure.
TL_BUCKETS = {
    "fit": ("pytorch_lightning/trainer/trainer.py", "_fit_impl"),
    "model forward": ("transferlab/tasks/classifier.py", "forward"),
    "metric updates (torchmetrics)": ("torchmetrics/metric.py", "wrapped_func"),
    "self.log": ("pytorch_lightning/core/module.py", "log"),
    "zero_grad": ("torch/optim/optimizer.py", "zero_grad"),
    "backward": ("torch/_tensor.py", "backward"),
    "AdamW step": ("torch/optim/adam.py", "step"),
    "closure": ("pytorch_lightning/plugins/precision/precision.py", "_wrap_closure"),
    "callback hooks": ("pytorch_lightning/trainer/call.py", "_call_callback_hooks"),
    "data fetch": ("pytorch_lightning/loops/fetchers.py", "__next__"),
    "validation loops": ("pytorch_lightning/loops/evaluation_loop.py", "run"),
}
PLAIN_BUCKETS = {
    "model forward": ("torch/nn/modules/container.py", "forward"),
    "zero_grad": ("torch/optim/optimizer.py", "zero_grad"),
    "backward": ("torch/_tensor.py", "backward"),
    "AdamW step": ("torch/optim/adam.py", "step"),
    "data fetch": ("torch/utils/data/dataloader.py", "__next__"),
}
DISJOINT = ("model forward", "metric updates (torchmetrics)", "self.log", "zero_grad", "backward", "AdamW update",
            "callback hooks", "data fetch", "validation loops")


def buckets(prof: cProfile.Profile, table: dict[str, tuple[str, str]]) -> dict[str, float]:
    stats = pstats.Stats(prof).stats  # (file, line, function) -> (cc, nc, tottime, cumtime, callers)
    out = {}
    for name, (suffix, func) in table.items():
        out[name] = max((v[3] for (f, _, fn), v in stats.items() if f.endswith(suffix) and fn == func), default=0.0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started, load0 = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), load_averages()
    record = {}
    with tempfile.TemporaryDirectory(prefix="tl_profile_") as tmp:
        plain_rate(args.size, 3, 0, Path(tmp))
        transferlab_rate(args.size, 3, 0, [f"threads={torch.get_num_threads()}"], Path(tmp))
        for who, fn, extra, table in (("plain", plain_rate, (), PLAIN_BUCKETS),
                                      ("transferlab", transferlab_rate, ([f"threads={torch.get_num_threads()}"],), TL_BUCKETS)):
            prof = cProfile.Profile()
            before = load_averages()
            prof.enable()
            rec = fn(args.size, args.steps, 0, *extra, Path(tmp))
            prof.disable()
            steps = rec["steps"]
            record[who] = {"steps": steps, "load_before": before, "load_after": load_averages(),
                           "ms_per_step": {k: 1000 * v / steps for k, v in buckets(prof, table).items()}}
    tl = record["transferlab"]["ms_per_step"]
    tl["AdamW update"] = tl.pop("AdamW step") - tl.pop("closure")
    tl["rest (loss, Lightning's loop, step timer)"] = tl["fit"] - sum(tl[k] for k in DISJOINT)
    command = "python experiments/benchmarks/profile_step.py " + " ".join(sys.argv[1:])
    write_results(f"profile_{args.size}", {"command": command, "machine": machine(), "started": started, "load_start": load0,
                                           "load_end": load_averages(), "torch_threads": torch.get_num_threads(), **record})
    for who in ("plain", "transferlab"):
        print(who, {k: round(v, 2) for k, v in record[who]["ms_per_step"].items()})


if __name__ == "__main__":
    main()
