"""The run summary (metrics.json): what compare, sweeps and studies read. Written atomically."""

import json
import math
from pathlib import Path
from typing import Any

from transferlab.analysis.runs import SUMMARY_FILE
from transferlab.utils.io import atomic_write_text


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def write_summary(folder: str | Path, summary: dict[str, Any]) -> Path:
    path = Path(folder) / SUMMARY_FILE
    atomic_write_text(path, json.dumps({k: _plain(v) for k, v in summary.items()}, indent=2, sort_keys=True) + "\n")
    return path
