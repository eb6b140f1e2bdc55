"""What a finished run reports: one result line, provenance in metrics.json, the summary in every logger."""

import json

import pytest
import yaml
from conftest import FAST, compose_cfg

TINY = ["model=mlp", "model.hidden=16", "model.depth=1", "task=supervised", "data.classes=[0,1,2]"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import io
    from contextlib import redirect_stdout

    from transferlab.runner.run import train

    out = tmp_path_factory.mktemp("run")
    cfg = compose_cfg([*FAST, *TINY, "logger=many", "logger.wandb=null"], out)
    buf = io.StringIO()
    with redirect_stdout(buf):
        train(cfg)
    return out, json.loads((out / "metrics.json").read_text()), buf.getvalue()


def test_a_single_stage_ends_with_one_result_line(run):
    out, m, stdout = run
    lines = [line for line in stdout.splitlines() if line.startswith("result: ")]
    assert len(lines) == 1 and lines[0].endswith(f" -> {out}"), lines
    shown = dict(item.split("=") for item in lines[0][len("result: "):-len(f" -> {out}")].split())
    assert shown == {k: f"{v:.4f}" for k, v in m.items() if k.startswith("test/")} and "test/acc" in shown


def test_metrics_json_records_provenance(run, tmp_path):
    from transferlab.runner.build import build_datamodule
    from transferlab.runner.provenance import data_sha

    out, m, _ = run
    assert len(m["provenance/config_sha"]) == 64 and len(m["provenance/data_sha"]) == 64
    assert m["provenance/torch"] and m["provenance/pytorch-lightning"] and m["provenance/hydra-core"]
    assert m["provenance/git_dirty"] in (True, False, None) and "provenance/git_commit" in m
    same = build_datamodule(compose_cfg([*TINY], tmp_path))
    same.setup("fit")
    assert data_sha(same) == m["provenance/data_sha"]  # the same split, proven
    other = build_datamodule(compose_cfg([*TINY, "data.split_seed=1"], tmp_path))
    other.setup("fit")
    assert data_sha(other) != m["provenance/data_sha"]


def test_every_logger_gets_the_summary(run):
    out, m, _ = run
    hparams = yaml.safe_load((out / "csv" / "hparams.yaml").read_text())
    assert hparams["summary"]["test/acc"] == m["test/acc"]
    assert hparams["summary"]["params/trainable"] == m["params/trainable"] and "time/step_ms" in hparams["summary"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    plugin = events.PluginTagToContent("hparams")
    assert plugin, "no HParams written"
    from tensorboard.plugins.hparams import plugin_data_pb2

    infos = [plugin_data_pb2.HParamsPluginData.FromString(v) for v in plugin.values()]
    metric_tags = {mi.name.tag for i in infos for mi in i.experiment.metric_infos}
    session = [i.session_start_info for i in infos if i.session_start_info.hparams]
    assert "test/acc" in metric_tags and "params/trainable_pct" in metric_tags, metric_tags
    assert any(s.hparams["task"].string_value == "supervised" for s in session)
    assert events.Scalars("test/acc")[-1].value == pytest.approx(m["test/acc"])
