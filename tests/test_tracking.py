"""Loggers: W&B offline runs hold the config, group and summary; the logger choice never changes metrics.json."""

import json
import logging
import sys

import pytest
from conftest import compose_cfg
from wandb_helpers import read_offline_run

TINY = [
    "task=supervised",
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
# differ between two runs by nature (timing, memory, paths)
VOLATILE = ("time/", "memory/", "provenance/config_sha")  # the two runs differ in `logger=` only


def _comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith(VOLATILE)}


@pytest.mark.slow
def test_logger_choice_and_wandb_offline_run(tmp_path, monkeypatch, caplog):
    from transferlab.runner.run import train
    from transferlab.tracking import wandb_logger as tracking

    csv_run = tmp_path / "csv_run"
    train(compose_cfg(TINY + ["logger=csv"], csv_run))

    # no credentials at all: the logger must choose offline mode itself and say so in one line
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(tracking, "_told_offline", False)
    many_run = tmp_path / "many_run"
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        train(compose_cfg(TINY + ["logger=many", "logger.wandb.tags=[k-shot,cnn]", "logger.wandb.log_model=true"], many_run))
    offline_lines = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert len(offline_lines) == 1 and "offline" in offline_lines[0] and "wandb sync" in offline_lines[0]

    csv_summary = json.loads((csv_run / "metrics.json").read_text())
    many_summary = json.loads((many_run / "metrics.json").read_text())
    assert _comparable(csv_summary) == _comparable(many_summary)
    assert (many_run / "csv" / "metrics.csv").is_file()
    assert list((many_run / "tensorboard").glob("events.out.tfevents.*"))

    # W&B files beside metrics.json, the run finished (so the next job starts its own run)
    assert sys.modules["wandb"].run is None
    rec = read_offline_run(many_run)
    assert rec["exit_code"] == 0
    run = rec["run"]
    assert run["run_group"] == "many_run" and run["display_name"] == "many_run"
    assert run["job_type"] == "supervised" and run["project"] == "transferlab"
    assert run.get("tags") == ["k-shot", "cnn"]
    cfg = rec["config"]
    assert cfg["data"]["name"] == "mnist1d" and cfg["task"]["name"] == "supervised"
    assert cfg["trainer"]["limit_train_batches"] == 2 and cfg["optimizer"]["lr"] == pytest.approx(3e-3)
    for key in ("test/acc", "test/loss", "params/trainable", "params/trainable_pct", "time/wall_s"):
        assert rec["summary"][key] == pytest.approx(many_summary[key]), key
    assert rec["summary"]["task"] == "supervised"
    # log_model=true: the checkpoint went into the offline run as an artifact (uploaded by `wandb sync`)
    assert "artifact" in rec["types"], sorted(set(rec["types"]))
