"""The run's tracker id (e.g. W&B `id`), kept in the run folder so a resumed run continues the same run."""

import secrets
from pathlib import Path

from transferlab.utils.io import atomic_write_text

RUN_ID_FILE = "wandb_id"


def persistent_run_id(folder: str | Path, filename: str = RUN_ID_FILE) -> str:
    """The run's tracker id (e.g. W&B `id`), created once in the run folder so a resumed run reuses it."""
    path = Path(folder) / filename
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    run_id = secrets.token_hex(4)
    atomic_write_text(path, run_id + "\n")
    return run_id
