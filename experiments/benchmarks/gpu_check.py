"""Precision x compile on one GPU: throughput and accuracy of a mid-sized transformer (one process).

    python experiments/benchmarks/gpu_check.py OUT_DIR [--epochs 6] [--variants 32-true,bf16-mixed]

Each variant is a real `run_stage` (task=supervised, data=mnist1d with 20k samples,
model=transformer width 256 depth 6) through the composed config tree; a timing callback
synchronizes the GPU around each training step so the median step time is the device's.
Each row also has the model FLOPs of one step (forward + backward, torch's FlopCounterMode), the
achieved TFLOP/s and the model FLOPs utilisation (MFU) against the GPU's dense peak for the precision
(PEAK_TFLOPS; GPU_PEAK_TFLOPS overrides). Writes gpu_results.json and gpu_results.md to OUT_DIR.
gpu_check.sh runs it on the GPU machine.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ["model=transformer", "model.width=256", "model.depth=6", "model.heads=8", "model.patch_size=4"]
DATA = ["task=supervised", "data=mnist1d", "data.generator.num_samples=20000", "data.batch_size=256"]
SMOKE = ["trainer.limit_train_batches=12", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
VARIANTS = {
    "32-true": ["trainer.precision=32-true"],
    "16-mixed": ["trainer.precision=16-mixed"],
    "bf16-mixed": ["trainer.precision=bf16-mixed"],
    "bf16-true": ["trainer.precision=bf16-true"],
    "32-true+compile": ["trainer.precision=32-true", "compile=true"],
    "16-mixed+compile": ["trainer.precision=16-mixed", "compile=true"],
    "bf16-mixed+compile": ["trainer.precision=bf16-mixed", "compile=true"],
}


def synced_step_times():
    """A Lightning callback recording each training step's time with the GPU synchronized."""
    import pytorch_lightning as pl
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    class SyncedStepTimes(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync()
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync()
            self.times.append(time.perf_counter() - self._t0)

    return SyncedStepTimes()


# dense peak TFLOP/s per GPU (vendor datasheets, SXM parts): (fp32 without tensor cores, 16-bit tensor cores).
# MFU = model FLOPs per step / step time / this peak; GPU_PEAK_TFLOPS=<number> overrides the 16-bit value.
PEAK_TFLOPS = {"H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0),
               "A10": (31.2, 125.0), "V100": (15.7, 125.0), "T4": (8.1, 65.0)}


def peak_tflops(device_name: str, precision: str) -> float | None:
    sixteen = "16" in precision
    override = os.environ.get("GPU_PEAK_TFLOPS")
    if override and sixteen:
        return float(override)
    for key, (fp32, half) in PEAK_TFLOPS.items():
        if key in device_name:
            return half if sixteen else fp32
    return None


def model_flops_per_step(cfg, device: str) -> float:
    """FLOPs of one training step's forward + backward (torch's FlopCounterMode), optimizer excluded."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from transferlab.runner.build import build_backbone, build_datamodule, build_task

    dm = build_datamodule(cfg)
    dm.setup("fit")
    task = build_task(cfg, build_backbone(cfg, dm.spec), dm.spec).to(device)
    x, y = next(iter(dm.train_dataloader()))
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.cross_entropy(task(x.to(device)), y.to(device))
        loss.backward()
    return float(counter.get_total_flops())


def run_variant(name: str, overrides: list[str], out: Path, epochs: int, smoke: list[str]) -> dict:
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import transferlab.runner.build as build
    from transferlab.runner.stage import run_stage

    cuda = torch.cuda.is_available()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*DATA, *MODEL, "trainer=gpu" if cuda else "trainer=cpu",
                                          f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
                                          f"paths.output_dir={out / name}", *overrides, *smoke])
    timer = synced_step_times()
    original = build.build_callbacks
    build.build_callbacks = lambda c: [*original(c), timer]  # this benchmark's own timer, nothing else changed
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        summary = run_stage(cfg, out / name)
    finally:
        build.build_callbacks = original
    steady = timer.times[10:] or timer.times
    step_s = statistics.median(steady)
    batch = int(cfg.data.batch_size)
    flops = model_flops_per_step(cfg, "cuda" if cuda else "cpu")
    peak = peak_tflops(torch.cuda.get_device_name(0) if cuda else "cpu", str(cfg.trainer.precision))
    return {
        "variant": name, "precision": str(cfg.trainer.precision), "compile": bool(cfg.compile),
        "steps": summary["steps"], "batch": batch, "median_step_ms": round(1000 * step_s, 3),
        "samples_per_s": round(batch / step_s), "first_step_s": round(timer.times[0], 2),
        "model_tflop_per_step": round(flops / 1e12, 4), "achieved_tflops": round(flops / step_s / 1e12, 2),
        "peak_tflops": peak, "mfu_pct": round(100 * flops / step_s / 1e12 / peak, 1) if peak else None,
        "fit_s": round(summary["time/fit_s"], 1), "run_s": round(time.perf_counter() - start, 1),
        "peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None, "val/acc": round(summary["val/acc"], 4),
        "test/acc": round(summary["test/acc"], 4), "test/loss": round(summary["test/loss"], 4),
        "test/samples": summary.get("test/samples"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--smoke", action="store_true", help="a few batches (CPU check of this script)")
    args = parser.parse_args()
    import torch

    rows = []
    for name in args.variants.split(","):
        try:
            rows.append(run_variant(name, VARIANTS[name], args.out, args.epochs, SMOKE if args.smoke else []))
        except Exception as e:  # noqa: BLE001 - one failing variant is a result too; the others still run
            rows.append({"variant": name, "error": f"{type(e).__name__}: {e}"[:500]})
        print(json.dumps(rows[-1]), flush=True)
    machine = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__, "cuda": torch.version.cuda,
               "python": sys.version.split()[0]}
    (args.out / "gpu_results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    keys = ["variant", "samples_per_s", "median_step_ms", "peak_mem_mb", "achieved_tflops", "mfu_pct", "first_step_s", "fit_s",
            "val/acc", "test/acc", "steps"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, r.get("error", "-") if k == "samples_per_s" else "-")) for k in keys) + " |" for r in rows]
    (args.out / "gpu_results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
