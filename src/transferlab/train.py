"""`python -m transferlab.train [overrides]`: pretrain, fine-tune, or run a pipeline of stages."""

import hydra
from omegaconf import DictConfig

from transferlab.cli import CONFIG_DIR, friendly_hydra_errors, report_user_errors
from transferlab.sweep import sweep_job


@friendly_hydra_errors
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@report_user_errors
@sweep_job
def main(cfg: DictConfig) -> float | None:
    from transferlab.run import train

    return train(cfg)


if __name__ == "__main__":
    main()
