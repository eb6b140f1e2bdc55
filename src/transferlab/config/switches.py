"""The root run switches (lightning-hydra-template's names): `train`, `test`, and `ckpt_path` = `resume`.

`train=false` tests a checkpoint (`ckpt_path=...`) or the initial weights without fitting; `test=false`
fits without testing; `ckpt_path=X` is `resume=X` for users who know the template's key.
"""

from omegaconf import DictConfig

from transferlab.config.stages import is_pipeline
from transferlab.errors import ConfigError


def check_switches(cfg: DictConfig) -> None:
    for key in ("train", "test"):
        if key in cfg and not isinstance(cfg[key], bool):
            raise ConfigError(key, cfg[key], "true or false")
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume and ckpt_path and str(resume) != str(ckpt_path):
        raise ConfigError("ckpt_path", ckpt_path, f"the same as resume={resume!r} or unset (ckpt_path is resume's other name)")
    if cfg.get("train", True) is False:
        if cfg.get("test", True) is False:
            raise ConfigError("train", False, "true when test=false (train=false test=false runs nothing)")
        if is_pipeline(cfg):
            raise ConfigError("train", False, f"true with the pipeline task={cfg.task.get('name')}: its later stages need "
                                              "the earlier ones trained (test one checkpoint: a single-stage task + ckpt_path=...)")
        if (resume or ckpt_path) == "auto":
            raise ConfigError("ckpt_path", "auto", "a checkpoint file or run folder with train=false")
