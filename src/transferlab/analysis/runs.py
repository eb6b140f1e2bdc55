"""Run folders as compare, sweeps and studies read them: metrics.json, .hydra/overrides.yaml, error.json.

Reads files only, never imports torch or a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_FILE = "metrics.json"
ERROR_FILE = "error.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
SEED_KEY = "seed"
# folders inside a run that are never runs themselves
SKIP_DIRS = {"checkpoints", "csv", "tensorboard", "wandb", ".hydra", ".submitit"}


def read_summary(folder: str | Path) -> dict[str, Any]:
    with open(Path(folder) / SUMMARY_FILE) as f:
        return json.load(f)


@dataclass
class Run:
    """One run folder as compare sees it."""

    path: Path
    name: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # ok | failed | incomplete
    reason: str | None = None
    error: str | None = None

    def value(self, key: str) -> Any:
        """An override (as written on the command line) or a metrics.json value."""
        if key in self.overrides:
            return _number(self.overrides[key])
        return self.metrics.get(key)


def _number(text: Any) -> Any:
    try:
        return int(text)
    except (TypeError, ValueError):
        try:
            return float(text)
        except (TypeError, ValueError):
            return text


def parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    """`key=value` lines (Hydra's overrides.yaml) -> {key: value}; `+`/`++` prefixes dropped, `~key` kept as deleted."""
    out: dict[str, str] = {}
    for line in lines:
        line = str(line)
        if line.startswith("~"):
            key, _, value = line[1:].partition("=")
            out[key] = "<deleted>"
            continue
        key, _, value = line.lstrip("+").partition("=")
        out[key] = value
    return out


def is_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in (SUMMARY_FILE, ERROR_FILE, OVERRIDES_FILE))


def find_run_folders(paths: Sequence[str | Path], max_depth: int = 4) -> list[Path]:
    """Each given run folder, or every run folder under a given sweep/parent folder (not inside a run)."""
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if is_run(folder):
            found.append(folder)
            return
        if depth >= max_depth:
            return
        subdirs = [d for d in folder.iterdir() if d.is_dir() and d.name not in SKIP_DIRS and not d.name.startswith(".")]
        for d in sorted(subdirs, key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name)):
            walk(d, depth + 1)

    for p in paths:
        p = Path(p)
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: not a folder (give a run folder or a multirun folder)")
        walk(p, 0)
    return found


def read_run(folder: Path, root: Path | None = None) -> Run:
    import yaml

    run = Run(path=folder)
    if root is not None:
        try:
            run.name = str(folder.resolve().relative_to(root.resolve())) or folder.name
        except ValueError:
            run.name = str(folder)
    run.name = run.name if run.name not in ("", ".") else folder.name
    try:
        over = folder / OVERRIDES_FILE
        if over.is_file():
            run.overrides = parse_overrides(_read(over, yaml.safe_load, list))
        if (folder / SUMMARY_FILE).is_file():
            run.metrics = _read(folder / SUMMARY_FILE, json.loads, dict)
        err = _read(folder / ERROR_FILE, json.loads, dict) if (folder / ERROR_FILE).is_file() else None
    except UnreadableRunFile as e:  # one broken file marks its run failed; the other runs still compare
        run.status, run.reason, run.error = "failed", "unreadable", str(e)
        return run
    if err is not None:
        run.status, run.reason, run.error = "failed", err.get("reason"), err.get("error")
    elif not run.metrics:
        run.status = "incomplete"
    elif bad := non_finite_metrics(run.metrics):
        run.status, run.reason, run.error = "failed", "non-finite", f"{', '.join(bad)} not finite"
    elif bad := invalid_metrics(run.metrics):  # a crafted or corrupt value fails its own run, not compare
        run.status, run.reason, run.error = "failed", "invalid", f"{'; '.join(bad)} (in {folder / SUMMARY_FILE})"
    return run


class UnreadableRunFile(Exception):
    """A run folder's metrics.json / error.json / overrides.yaml is corrupt or of the wrong shape."""


def _read(path: Path, parse, kind: type):
    """`parse(text)` of a run file, which must be a `kind` (an empty overrides file is an empty list)."""
    try:
        value = parse(path.read_text())
    except Exception as e:  # noqa: BLE001 - OSError, UnicodeDecodeError and json/yaml parse errors alike
        raise UnreadableRunFile(f"{path} is not readable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if value is None and kind is list:
        return []
    if not isinstance(value, kind):
        raise UnreadableRunFile(f"{path} holds a {type(value).__name__}, not a {kind.__name__}")
    return value


# metrics.json is flat: every value is a number or a string (provenance/git_dirty is the one boolean).
METRIC_GROUPS = {"test", "val", "params", "time", "memory", "gain"}  # keys with such a part hold numbers
LARGEST = 3.4e38  # float32's largest: a metric a run logged is never bigger, so a bigger number is corrupt
# The only ranges compare checks are the documented ones (README, metrics.json): accuracy and macro F1
# are fractions in [0, 1] and params/trainable_pct is 0-100. Other metrics (losses, gains, times, counts)
# have no range compare could know, so they are only checked to be numbers.
FRACTIONS = ("acc", "f1")  # the key's last part: test/acc, val/f1, finetune/test/acc
PERCENTS = ("params/trainable_pct",)


def invalid_metrics(metrics: dict[str, Any]) -> list[str]:
    """Values that cannot be the metric their key names: a list/dict anywhere, a boolean, text or null under
    a metric group (test/, val/, params/, ...), a number beyond LARGEST, a fraction outside [0, 1] or a
    trainable % outside [0, 100] (NaN/Inf included; other metrics may be "nan", "inf", as metrics.json stores them)."""
    import math

    bad = []
    for key, value in metrics.items():
        metric = bool(METRIC_GROUPS & set(key.split("/")[:-1]))
        shown = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else json.dumps(value)
        shown = shown if len(shown) <= 24 else shown[:20] + "..."
        if isinstance(value, (list, dict)) or (metric and isinstance(value, bool)):
            bad.append(f"{key}={shown} is a {type(value).__name__}, not a number")
            continue
        if not metric and (value is None or isinstance(value, (bool, str))):
            continue  # provenance/git_dirty, checkpoint paths, names, "pretrained": null
        try:
            number = float(value)
        except (TypeError, ValueError):  # text or null where a number belongs
            bad.append(f"{key}={shown} is not a number")
            continue
        except OverflowError:  # an integer of hundreds of digits
            bad.append(f"{key}={shown} is beyond any metric (larger than {LARGEST:g})")
            continue
        if math.isfinite(number) and abs(number) > LARGEST:  # NaN/Inf of a test metric: `non_finite_metrics`
            bad.append(f"{key}={shown} is beyond any metric (larger than {LARGEST:g})")
        elif "/" in key and key.rsplit("/", 1)[1] in FRACTIONS and not 0 <= number <= 1:
            bad.append(f"{key}={shown} is not a fraction in [0, 1]")
        elif key.endswith(PERCENTS) and not 0 <= number <= 100:
            bad.append(f"{key}={shown} is not a percentage in [0, 100]")
    return bad


def non_finite_metrics(metrics: dict[str, Any]) -> list[str]:
    """Test metrics that are NaN/Inf (metrics.json stores them as the strings "nan", "inf")."""
    import math

    bad = []
    for key, value in metrics.items():
        if not key.startswith("test"):
            continue
        try:
            if not math.isfinite(float(value)):
                bad.append(key)
        except (TypeError, ValueError, OverflowError):
            continue
    return bad


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    folders = find_run_folders(paths)
    if not folders:
        return []
    root = Path(_common_root(folders))
    return [read_run(f, root) for f in folders]


def _common_root(folders: Sequence[Path]) -> str:
    import os

    resolved = [str(f.resolve()) for f in folders]
    if len(resolved) == 1:
        return str(Path(resolved[0]).parent)
    return os.path.commonpath(resolved)


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (absent counts as a value), in first-seen order."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys]
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def upstream_without_seed(value: str | None) -> str | None:
    """A value naming another run's folder (`task.pretrained=<run>`) -> that run's overrides minus its seed.

    Seed k's fine-tuning starts from seed k's pretraining: the two paths differ, the pretraining
    recipes do not, so seeds group under the recipe, e.g. `run(task=supervised data.classes=[0,1,2,3,4])`.
    """
    import yaml

    if not value:
        return value
    try:
        over = Path(value) / OVERRIDES_FILE
        if not over.is_file():
            return value
        upstream = parse_overrides(yaml.safe_load(over.read_text()) or [])
    except (OSError, ValueError, yaml.YAMLError):
        return value
    recipe = " ".join(f"{k}={v}" for k, v in upstream.items() if k != SEED_KEY and not k.startswith(("paths.", "hydra.")))
    return f"run({recipe})"
