"""The default run imports no heavy optional package of its own (issue 10: start-up time).

peft, wandb, optuna, datasets, tensorboard: never imported by a default run; nor is the deploy extra. transformers,
tokenizers, matplotlib: torchmetrics (inside `import pytorch_lightning`) imports them when they are
installed, which transferlab cannot control; so for every watched package the check is that the
run adds none beyond what `import torch, pytorch_lightning` already brought in.
"""

import json
import os
import sys
from pathlib import Path

import proc_helpers
import pytest
from conftest import CONF, ROOT

NEVER = ["peft", "wandb", "optuna", "datasets", "tensorboard", "tensorboardX"]
# the deploy extra (onnx export, the server): only `export format=onnx` and `serve` import these
DEPLOY = ["onnx", "onnxscript", "onnxruntime", "fastapi", "uvicorn"]
WATCHED = NEVER + DEPLOY + ["transformers", "tokenizers", "matplotlib", "sklearn", "pandas"]

SCRIPT = """
import json, sys
import torch, pytorch_lightning
floor = set(sys.modules)
from hydra import compose, initialize_config_dir
from transferlab.runner.run import train
with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cfg = compose(config_name="train", overrides={overrides!r})
train(cfg)
watched = {watched!r}
new = {{name.split(".")[0] for name in set(sys.modules) - floor}}
print("RESULT" + json.dumps({{"present": sorted(m for m in watched if m in sys.modules), "new": sorted(new & set(watched))}}))
"""


@pytest.mark.slow
def test_default_run_imports_no_heavy_optional_package(tmp_path: Path):
    overrides = [f"paths.output_dir={tmp_path / 'run'}", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                 "trainer.limit_test_batches=1", "task.pretrain_trainer.max_epochs=1", "task.target_trainer.max_epochs=1"]
    code = SCRIPT.format(conf=str(CONF), overrides=overrides, watched=WATCHED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = proc_helpers.run([sys.executable, "-c", code], env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["task"] == "transfer"  # the default run really ran
    assert result["new"] == [], f"the default run imported {result['new']} (make these imports lazy)"
    assert not set(NEVER) & set(result["present"]), result["present"]


def test_apply_modules_import_the_deploy_extra_only_when_used():
    """predict, serve, export and the inference package import onnx / the server libraries inside the
    functions that need them, so `predict` and `export` (merged, torch_export) run without the extra."""
    code = ("import sys, transferlab.predict, transferlab.serve, transferlab.export, transferlab.inference.server, "
            f"transferlab.inference.classifier, transferlab.inference.inputs\nprint(sorted(m for m in {DEPLOY!r} if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = proc_helpers.run([sys.executable, "-c", code], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
