"""`python -m transferlab.train [overrides]`: pretrain, fine-tune, or run a pipeline of stages."""

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry


@hydra_entry("train", sweep=True)
def main(cfg: DictConfig) -> float | None:
    from transferlab.runner.run import train

    return train(cfg)


if __name__ == "__main__":
    main()
