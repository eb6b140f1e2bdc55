"""`python -m transferlab.predict ckpt_path=RUN input=FILE [out=predictions.csv] [top_k=3]`

Applies a trained classifier (supervised or fine-tuned, any peft method, adapter files and
`model=hf` included) to new, unlabelled inputs — a table, a text file, a flat image folder or an
.npz — with exactly the preprocessing its run trained with (stored in the checkpoint), streaming
the input in batches. The model is rebuilt only through `runner.restore` (the run's allowlist).
An existing `out` is replaced only with `overwrite=true`; a run's own record (metrics.json, *.ckpt,
adapter.pt) never is (`inference/output.py`).
"""

from pathlib import Path

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry


def predict(cfg: DictConfig) -> tuple[Path, int]:
    from transferlab.inference.output import check_out, overwrite_flag, writing

    out = Path(str(cfg.out))
    check_out(out, overwrite_flag(cfg), str(cfg.out))  # before anything heavy is imported
    from transferlab.inference.inputs import count_items, input_kind, read_batches
    from transferlab.inference.predictor import write_predictions
    from transferlab.runner.restore import restore_predictor

    input_kind(cfg.input)  # a missing or empty input fails before the model is built
    predictor = restore_predictor(cfg.ckpt_path, list(cfg.allowed_targets), cfg.get("pretrained"), str(cfg.device),
                                  cfg.get("text_column"))
    batches = read_batches(cfg.input, int(cfg.batch_size), cfg.get("id_column"))
    with writing(out, f"out={cfg.out}"):
        n = write_predictions(predictor, batches, out, int(cfg.top_k), bool(cfg.all_probabilities),
                              total=count_items(cfg.input), progress=bool(cfg.progress))
    return out, n


@hydra_entry("predict")
def main(cfg: DictConfig) -> None:
    out, n = predict(cfg)
    print(f"{n} predictions written to {out}", flush=True)


if __name__ == "__main__":
    main()
