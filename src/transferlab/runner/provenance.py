"""Provenance of a run, for metrics.json: which code, which libraries, which config, which examples.

Two runs with equal `provenance/config_sha` and `provenance/data_sha` at the same commit (tree clean)
trained the same recipe on the same train/val/test examples; different values tell them apart.
"""

import hashlib
import json
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "peft")


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout the package runs from; (None, None) outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# how a run is started, not what it trains: a resumed or replaced run keeps its recipe's hash
RUN_CONTROL_KEYS = ("resume", "resume_force", "overwrite", "ckpt_path")


def config_sha(config: dict[str, Any]) -> str:
    """sha256 of the resolved config (sorted-key JSON; the run folder and the run-control keys left out, so
    reruns elsewhere and resumed runs match)."""
    plain = json.loads(json.dumps(config, sort_keys=True, default=str))
    plain.get("paths", {}).pop("output_dir", None)
    for key in RUN_CONTROL_KEYS:
        plain.pop(key, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def data_sha(datamodule: Any) -> str | None:
    """sha256 over the train, val and test examples and labels, in order: equal iff the same split."""
    digest = hashlib.sha256()
    found = False
    for name in ("train_set", "val_set", "test_set"):
        tensors = getattr(getattr(datamodule, name, None), "tensors", None)
        if tensors is None:
            continue
        found = True
        digest.update(name.encode())
        for t in tensors:
            digest.update(str(tuple(t.shape)).encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest() if found else None


def provenance(config: dict[str, Any], datamodule: Any) -> dict[str, Any]:
    commit, dirty = git_state()
    out: dict[str, Any] = {"provenance/git_commit": commit, "provenance/git_dirty": dirty,
                           "provenance/config_sha": config_sha(config), "provenance/data_sha": data_sha(datamodule)}
    out.update({f"provenance/{name}": version for name, version in versions().items()})
    return out
