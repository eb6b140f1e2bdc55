"""What the benchmarks share: the machine description, composing the real config tree, results files.

Benchmarks are scripts (never timed assertions in tests). Each writes one JSON file under
`experiments/benchmarks/results/` with the machine, the date, the load average at start and end
(numbers taken while other jobs ran are marked), and its raw measurements.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
RESULTS = Path(__file__).resolve().parent / "results"
for p in (str(ROOT / "src"), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

# the two transformer sizes of issue 10
SIZES = {"small": {"width": 64, "depth": 4}, "mid": {"width": 256, "depth": 6}}
# the benchmark's own callback (steptimer.StepTimer) is instantiated through the config like any other
ALLOWED = "allowed_targets=[transferlab.,torch.optim.,pytorch_lightning.,lightning.,steptimer.]"


def load_average() -> float:
    return os.getloadavg()[0]


def load_averages() -> list[float]:
    """The 1-, 5- and 15-minute load averages (recorded before and after every timed run)."""
    return [round(x, 2) for x in os.getloadavg()]


def bootstrap_median_ci(values: list[float], level: float = 0.95, resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median: resample the pairs with replacement, take each median."""
    import random

    rng = random.Random(seed)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    lo = meds[int((1 - level) / 2 * resamples)]
    hi = meds[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return lo, hi


def within(ci: tuple[float, float], bound: float) -> bool:
    """A claim "at most `bound`" holds only when the whole interval is at or below it."""
    return ci[1] <= bound


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    import pytorch_lightning as pl

    return {"nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "lightning": pl.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def compose(overrides: list[str], output_dir: Path):
    """The real config tree, composed as the CLI would (minus Hydra's run folder)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def model_overrides(size: str) -> list[str]:
    s = SIZES[size]
    return ["model=transformer", f"model.width={s['width']}", f"model.depth={s['depth']}"]


def steady_rate(starts: list[float], warmup: int, excluded: float = 0.0) -> float:
    """Steps per second from the start times of consecutive steps, after `warmup` steps,
    minus `excluded` seconds (e.g. validation loops inside the span)."""
    span = starts[-1] - starts[warmup] - excluded
    return (len(starts) - 1 - warmup) / span


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def write_results(name: str, payload: dict[str, Any], out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def print_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    from transferlab.analysis.tables import markdown

    text = markdown([{h: f"{v:.3g}" if isinstance(v, float) else str(v) for h, v in r.items()} for r in rows])
    print(text)
    return text
