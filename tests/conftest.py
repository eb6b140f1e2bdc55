"""Shared fixtures: offline environment, in-process Hydra composition, tiny fast configs."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test workers share the machine: each gets one OpenMP/torch thread (set before torch is imported;
    # `threads: auto` honours it, and the CLI runs a test starts inherit it), so their threads never spin
    # against each other. Tests of the thread rule itself remove it from their environment.
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Fast settings for in-process runs: no progress bar, a handful of batches.
FAST = [
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Generated datasets are cached once per test session (not in the user's cache)."""
    os.environ.setdefault("TRANSFERLAB_CACHE", str(tmp_path_factory.mktemp("cache")))


def compose_cfg(overrides: list[str] | None = None, output_dir: Path | None = None, config_name: str = "train"):
    """Compose the real config tree in-process, as the CLI would (minus hydra's run folder)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        over = list(overrides or [])
        if output_dir is not None:
            over.append(f"paths.output_dir={output_dir}")
        return compose(config_name=config_name, overrides=over)


@pytest.fixture
def compose_fn():
    return compose_cfg
