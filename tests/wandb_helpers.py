"""Read a W&B offline run back with wandb's own reader (`wandb leet inspect --json`)."""

import json
import sys
from pathlib import Path
from typing import Any

import proc_helpers


def offline_run_file(run_folder: Path) -> Path:
    files = sorted((Path(run_folder) / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"expected one offline W&B run under {run_folder}/wandb, found {files}"
    return files[0]


def read_offline_run(run_folder: Path) -> dict[str, Any]:
    """{'run': the run record (group, job_type, display_name, tags), 'config': merged config, 'summary': merged summary,
    'types': record types seen, 'exit_code': ...} of the one offline run in `run_folder/wandb`."""
    done = proc_helpers.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(offline_run_file(run_folder))],
                            timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    types: list[str] = []
    exit_code = None
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        types.append(rec["type"])
        if rec["type"] == "run":
            run = rec["run"]
        elif rec["type"] == "config":
            config.update(rec["config"].get("update", {}))
        elif rec["type"] == "summary":
            summary.update(rec["summary"].get("update", {}))
        elif rec["type"] == "exit":
            exit_code = rec["exit"].get("exit_code", 0)
    return {"run": run, "config": config, "summary": summary, "types": types, "exit_code": exit_code}
