"""The run summary (metrics.json): what compare, sweeps and studies read. Written atomically."""

import json
import math
import os
from pathlib import Path
from typing import Any

SUMMARY_FILE = "metrics.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write-then-rename: a reader sees the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def read_summary(folder: str | Path) -> dict[str, Any]:
    with open(Path(folder) / SUMMARY_FILE) as f:
        return json.load(f)
