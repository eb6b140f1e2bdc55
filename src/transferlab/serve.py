"""`python -m transferlab.serve ckpt_path=RUN [port=8000] [host=127.0.0.1]`

Serves a classifier run (supervised or fine-tuned, adapter files and `model=hf` included) over HTTP
with the preprocessing its run trained with: `POST /predict` {"inputs": [...]} -> class names and
probabilities, `GET /health`. Requests are batched (`max_batch_size`, `max_wait_ms`); inputs that do
not fit are answered 400 with one line. FastAPI + uvicorn (`pip install 'transferlab[deploy]'`); the
model is rebuilt only through `runner.restore` (the run's allowlist). Ctrl-C / SIGTERM stops it.
"""

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry


def serve(cfg: DictConfig) -> None:
    from transferlab.errors import UserError

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("serve needs fastapi and uvicorn: pip install 'transferlab[deploy]'") from None
    from transferlab.inference.server import create_app
    from transferlab.runner.restore import restore_predictor

    predictor = restore_predictor(cfg.ckpt_path, list(cfg.allowed_targets), cfg.get("pretrained"), str(cfg.device),
                                  cfg.get("text_column"))
    app = create_app(predictor, int(cfg.max_batch_size), float(cfg.max_wait_ms), int(cfg.max_inputs), str(cfg.ckpt_path))
    print(f"serving {cfg.ckpt_path} on http://{cfg.host}:{cfg.port} (POST /predict, GET /health)", flush=True)
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level))


@hydra_entry("serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
