"""`trainer=mps` (Apple silicon) on a machine without Metal: one line before any work, not Lightning's traceback."""

from omegaconf import DictConfig

from transferlab.errors import ConfigError


def check_mps(cfg: DictConfig) -> None:
    if (cfg.get("trainer") or {}).get("accelerator") != "mps":
        return
    import torch

    if not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator", "mps", "'cpu' or 'gpu' on this machine (no Apple MPS device; "
                                                        "trainer=mps is for Apple silicon)")
