"""lightning-hydra-template's conventions, each run tiny and checked by its effect: debug presets, the
train/test switches, ckpt_path, root tags, extras, callbacks=none, logger presets, trainer=mps."""

import json
import warnings
from pathlib import Path

import pytest
import yaml
from conftest import compose_cfg

from transferlab.errors import ConfigError

TINY = ["task=supervised", "data=digits", "model=mlp", "model.hidden=16", "model.depth=1", "model.dropout=0.0",
        "trainer.enable_progress_bar=false"]
FEW = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def run(tmp_path: Path, overrides: list[str], name: str = "run") -> tuple[Path, dict]:
    from transferlab.runner.run import train

    out = tmp_path / name
    train(compose_cfg(TINY + overrides, output_dir=out))
    return out, json.loads((out / "metrics.json").read_text())


# -- debug presets -------------------------------------------------------------------------------

def test_debug_default_is_one_anomaly_checked_cpu_epoch(tmp_path):
    cfg = compose_cfg(TINY + ["debug=default"])
    assert (cfg.trainer.detect_anomaly, cfg.trainer.accelerator, cfg.trainer.max_epochs) == (True, "cpu", 1)
    assert cfg.data.num_workers == 0 and cfg.extras.enforce_tags is False
    _, m = run(tmp_path, ["debug=default", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                          "trainer.limit_test_batches=1"])
    assert (m["epochs"], m["steps"]) == (1, 3)


def test_debug_fdr_is_one_batch_and_writes_no_checkpoint(tmp_path):
    out, m = run(tmp_path, ["debug=fdr"])
    assert m["steps"] == 1 and "test/acc" in m


def test_debug_limit_runs_three_short_epochs(tmp_path):
    _, m = run(tmp_path, ["debug=limit"])
    assert (m["epochs"], m["steps"]) == (3, 3 * 10)


def test_debug_overfit_trains_on_the_same_three_batches(tmp_path):
    _, m = run(tmp_path, ["debug=overfit", "trainer.max_epochs=2"])
    assert (m["epochs"], m["steps"]) == (2, 2 * 3)


def test_debug_profiler_writes_the_profile_into_the_run_folder(tmp_path):
    out, _ = run(tmp_path, ["debug=profiler", *FEW[1:]])
    profile = (out / "fit-profile.txt").read_text()
    assert "run_training_epoch" in profile


# -- train / test switches, ckpt_path ------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return run(tmp_path_factory.mktemp("trained"), FEW)


def test_test_false_fits_without_testing(tmp_path):
    out, m = run(tmp_path, [*FEW, "test=false"])
    assert m["steps"] == 3 and not any(k.startswith("test/") for k in m)
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_train_false_tests_the_checkpoint_given_as_ckpt_path(trained, tmp_path):
    folder, first = trained
    _, m = run(tmp_path, [*FEW, "train=false", f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"])
    assert m["steps"] == 0 and m["tested"].endswith("last.ckpt")
    assert m["test/acc"] == pytest.approx(first["test/acc"]) and m["test/loss"] == pytest.approx(first["test/loss"])


def test_ckpt_path_is_resume(trained, tmp_path):
    from transferlab.runner.stage import resume_checkpoint

    ckpt = str(trained[0] / "checkpoints" / "last.ckpt")
    assert resume_checkpoint(compose_cfg([f"ckpt_path={ckpt}"]), tmp_path) == resume_checkpoint(compose_cfg([f"resume={ckpt}"]), tmp_path) == ckpt


@pytest.mark.parametrize("overrides, key", [
    (["resume=auto", "ckpt_path=/x.ckpt"], "ckpt_path"),
    (["train=false", "test=false"], "train"),
    (["train=false"], "train"),  # the default task is a pipeline
    (["task=supervised", "train=false", "ckpt_path=auto"], "ckpt_path"),
])
def test_contradictory_switches_are_one_line_errors(overrides, key):
    from transferlab.config.switches import check_switches

    with pytest.raises(ConfigError) as e:
        check_switches(compose_cfg(overrides))
    assert e.value.key == key


# -- tags, extras ---------------------------------------------------------------------------------

def test_root_tags_reach_the_loggers(tmp_path):
    assert list(compose_cfg(["logger=wandb", "tags=[a,b]"]).logger.wandb.tags) == ["a", "b"]
    out, _ = run(tmp_path, [*FEW, "logger=csv", "tags=[lr_sweep,v2]"])
    hparams = yaml.safe_load((out / "csv" / "hparams.yaml").read_text())
    assert hparams["config"]["tags"] == ["lr_sweep", "v2"]


def test_extras_print_config_prints_and_saves_the_tree(tmp_path, capsys):
    from transferlab.runner.extras import apply_extras

    apply_extras(compose_cfg(["extras.print_config=true", *TINY, "model.hidden=17"], output_dir=tmp_path), tmp_path)
    printed = capsys.readouterr().out
    saved = (tmp_path / "config_tree.log").read_text()
    assert printed.strip() == saved.strip()
    assert saved.startswith("CONFIG") and "├── data" in saved and "hidden: 17" in saved


def test_extras_enforce_tags_refuses_an_untagged_sweep(monkeypatch, tmp_path):
    from transferlab.runner import extras

    monkeypatch.setattr(extras, "in_multirun", lambda: True)
    with pytest.raises(ConfigError) as e:
        extras.apply_extras(compose_cfg(["extras.enforce_tags=true"]), tmp_path)
    assert e.value.key == "tags"
    extras.apply_extras(compose_cfg(["extras.enforce_tags=true", "tags=[sweep1]"]), tmp_path)  # tagged: fine
    extras.apply_extras(compose_cfg([]), tmp_path)  # not enforced by default


def test_extras_ignore_warnings_silences_warnings(tmp_path):
    from transferlab.runner.extras import apply_extras

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        apply_extras(compose_cfg([]), tmp_path)
        warnings.warn("still shown", UserWarning, stacklevel=1)
        apply_extras(compose_cfg(["extras.ignore_warnings=true"]), tmp_path)
        warnings.warn("silenced", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["still shown"]


# -- callbacks=none, loggers, trainer=mps --------------------------------------------------------

def test_callbacks_none_runs_without_callbacks_or_checkpoints(tmp_path):
    out, m = run(tmp_path, [*FEW, "callbacks=none"])
    assert compose_cfg(["callbacks=none"]).callbacks == {}
    assert m["steps"] == 3 and m["checkpoint"] is None and not list(out.rglob("*.ckpt"))


def test_mlflow_logger_offline_file_store_has_the_run_params_metrics_and_tags(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out, m = run(tmp_path, [*FEW, "logger=mlflow", "tags=[smoke]"])
    client = MlflowClient(tracking_uri=f"file:{out / 'mlruns'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "transferlab"]
    [mlrun] = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["config/model/hidden"] == "16" and mlrun.data.params["config/seed"] == "0"
    assert mlrun.data.metrics["test/acc"] == pytest.approx(m["test/acc"])
    assert "val/acc" in mlrun.data.metrics and mlrun.data.tags["smoke"] == "true"


@pytest.mark.parametrize("preset, package", [("aim", "aim"), ("comet", "comet_ml"), ("neptune", "neptune")])
def test_logger_presets_without_their_package_are_one_line(preset, package):
    import importlib.util

    from transferlab.tracking.external_loggers import check_logger_packages

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(ConfigError) as e:
        check_logger_packages(compose_cfg([f"logger={preset}"]))
    assert e.value.key == f"logger.{preset}" and "pip install" in str(e.value) and "\n" not in str(e.value)


def test_trainer_mps_selects_apple_gpus_and_refuses_other_machines(tmp_path):
    import torch

    from transferlab.config.accelerator import check_mps

    cfg = compose_cfg(["trainer=mps"])
    assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("mps", 1)
    if torch.backends.mps.is_available():
        check_mps(cfg)
    else:
        with pytest.raises(ConfigError, match="no Apple MPS device"):
            check_mps(cfg)


def test_progress_bar_shows_the_train_loss_and_the_monitored_metric_only(monkeypatch):
    from types import SimpleNamespace

    import torch
    from pytorch_lightning.callbacks import RichProgressBar

    from transferlab.callbacks.progress import ProgressBar

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda *a: None)
    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={"val/acc": 0.5, "val/f1": 0.4, "val/loss": 1.2},
                              max_epochs=1, max_steps=-1, num_training_batches=8, global_step=0)
    bar = ProgressBar(monitor="val/acc")
    bar._trainer = trainer
    assert bar.get_metrics(trainer, None) == {"val/acc": 0.5}  # no step drawn yet: no loss to show
    # the loss training_step returned, not Lightning's `loss` (divided by accumulate_grad_batches)
    bar.on_train_batch_end(trainer, None, {"loss": torch.tensor(0.35), "loss_step": torch.tensor(0.7)}, None, 0)
    assert bar.get_metrics(trainer, None) == {"train/loss": pytest.approx(0.7), "val/acc": 0.5}
    assert compose_cfg(TINY).callbacks.progress_bar.monitor == "val/acc"  # task.monitor


def test_step_loss_is_logged_only_where_lightning_writes_it_and_the_csv_is_unchanged(tmp_path, monkeypatch):
    """tasks/base.py logs `train/loss_step` only on the steps Lightning's logger connector writes; the CSV must
    equal the one from logging it on every step (fails loudly if Lightning changes when it writes)."""
    import csv

    import pytorch_lightning as pl

    from transferlab.tasks.base import BaseTask

    def losses(folder):
        with open(folder / "csv" / "metrics.csv") as f:
            return [(r["step"], r["train/loss_step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]

    logged = []
    monkeypatch.setattr(pl.LightningModule, "log", lambda self, name, *a, _log=pl.LightningModule.log, **k: (
        logged.append(name), _log(self, name, *a, **k))[1])
    few = ["trainer.max_epochs=2", "trainer.limit_train_batches=7", "trainer.limit_val_batches=1",
           "trainer.limit_test_batches=1", "trainer.log_every_n_steps=3", "trainer.accumulate_grad_batches=2"]
    gated, _ = run(tmp_path, few, "gated")
    # 2 epochs x 4 optimizer steps (7 batches, 2 a step, the last alone): written at steps 3 and 6 only
    assert logged.count("train/loss_step") == 2

    monkeypatch.setattr(BaseTask, "on_train_batch_end", lambda self, outputs, batch, i: self.log(  # every batch
        "train/loss_step", outputs["loss_step"], on_step=True, on_epoch=False))
    every, _ = run(tmp_path, few, "every")
    assert losses(gated) == losses(every) and len(losses(gated)) == 2
    with open(gated / "csv" / "metrics.csv") as a, open(every / "csv" / "metrics.csv") as b:
        assert a.read() == b.read()


def test_progress_bar_updates_at_its_refresh_rate_and_on_the_last_batch(monkeypatch):
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import RichProgressBar

    from transferlab.callbacks import progress

    updated, clock = [], [100.0]
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, tr, m, o, b, i: updated.append(i))
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress.ProgressBar(refresh_rate=4)
    bar._trainer = SimpleNamespace(max_epochs=20, max_steps=-1, num_training_batches=8, global_step=0)
    for i in range(8):  # 8 batches 0.1 s apart: a redraw every 0.25 s
        bar.on_train_batch_end(bar._trainer, None, None, None, i)
        clock[0] += 0.1
    assert updated == [0, 3, 6, 7]  # batch 7, the epoch's last, only 0.1 s after batch 6's update
