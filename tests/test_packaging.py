"""transferlab as an installed library: the configs ship in the package, one console script per entry point,
a user's own config folder and package, and a wheel that runs the example project outside the repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import proc_helpers
import pytest
import tomllib
import yaml
from conftest import ROOT, compose_cfg

from transferlab.config.instantiate import widen_allowed_targets

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXAMPLE = ROOT / "examples" / "own_project"


def run_in_group(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """A subprocess in its own process group; the whole group is killed if it outlives `timeout` (tests/proc_helpers.py)."""
    return proc_helpers.run(args, cwd=cwd, env=env, timeout=timeout)


def test_every_entry_point_has_its_console_script():
    scripts = PYPROJECT["project"]["scripts"]
    pkg = ROOT / "src" / "transferlab"
    entry_points = sorted(p.stem for p in pkg.glob("*.py") if 'if __name__ == "__main__"' in p.read_text())
    assert entry_points, "no entry points found"
    assert scripts == {f"transferlab-{name}": f"transferlab.{name}:main" for name in entry_points}


def test_the_package_list_is_the_source_tree_plus_the_configs():
    tool = PYPROJECT["tool"]["setuptools"]
    found = sorted(".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py"))
    assert sorted(tool["packages"]) == sorted([*found, "transferlab.conf"])
    assert tool["package-dir"]["transferlab.conf"] == "conf"


def test_version_is_written_once_and_heads_the_changelog():
    import transferlab

    assert PYPROJECT["project"]["dynamic"] == ["version"] and "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "transferlab.__version__"}
    first = next(line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## "))
    assert first.startswith(f"## {transferlab.__version__} ")


def test_config_dir_is_the_checkout_here_and_the_package_elsewhere(monkeypatch, tmp_path):
    from transferlab.runner import entry

    monkeypatch.delenv("TRANSFERLAB_CONFIG_DIR", raising=False)
    assert entry.config_dir() == str(ROOT / "conf")
    monkeypatch.setattr(entry, "__file__", str(tmp_path / "site-packages" / "transferlab" / "runner" / "entry.py"))
    assert entry.config_dir() == "pkg://transferlab.conf"
    monkeypatch.setenv("TRANSFERLAB_CONFIG_DIR", str(tmp_path))
    assert entry.config_dir() == str(tmp_path)


def test_a_users_config_folder_on_the_search_path_adds_options_and_allowed_targets(monkeypatch, tmp_path):
    """`hydra.searchpath` (and `--config-dir`, its command-line form) adds the user's groups beside the built-ins."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    from transferlab.config.validate import validate

    cfg = compose_cfg([f"hydra.searchpath=[file://{EXAMPLE / 'configs'}]", "experiment=sines_transfer"], output_dir=tmp_path)
    assert (cfg.data.name, cfg.model.name, cfg.task.name) == ("sines", "tinyconv", "transfer")
    builtins = list(cfg.allowed_targets)
    widen_allowed_targets(cfg)
    assert list(cfg.allowed_targets) == [*builtins, "sinelab."]  # built-ins kept, not retyped
    validate(cfg)  # the user's targets pass the allowlist and their signatures


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_runs_the_example_from_outside_the_repository(tmp_path):
    """Build a wheel, install it (not editable) in a new virtualenv that reuses this environment's packages,
    offline; install the example project the same way; train its experiment from a folder outside the repo."""
    build_leftovers = [ROOT / "src" / "transferlab.egg-info", ROOT / "build"]  # an editable install makes the first
    existed = [p.exists() for p in build_leftovers]
    src = tmp_path / "src_copy"  # build from a copy: an in-tree build would leave build/ and *.egg-info behind
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    project = tmp_path / "sinelab"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRANSFERLAB_CONFIG_DIR")}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    def ok(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = run_in_group(args, cwd, env, timeout)
        assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    pip = [sys.executable, "-m", "pip"]
    ok([*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)], tmp_path)
    [wheel] = (tmp_path / "dist").glob("transferlab-*.whl")
    ok([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(tmp_path / "venv")], tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    install = [*pip, "--python", str(python), "install", "--no-deps", "--no-index", "--no-build-isolation"]
    ok([*install, str(wheel)], tmp_path)
    ok([*install, str(project)], tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = ok([str(python), "-c", "import transferlab, sinelab; print(transferlab.__file__); print(sinelab.__file__)"], work)
    assert all(str(tmp_path / "venv") in line for line in where.stdout.split()), where.stdout

    # hydra.searchpath, the config-file form of --config-dir: composes the user's experiment (no run)
    shown = ok([str(tmp_path / "venv" / "bin" / "transferlab-train"), f"hydra.searchpath=[file://{project / 'configs'}]",
                "experiment=sines_transfer", "--cfg", "job"], work)
    assert "sinelab.backbone.TinyConv" in shown.stdout
    run = ok([str(tmp_path / "venv" / "bin" / "transferlab-train"), "--config-dir", str(project / "configs"),
              "experiment=sines_transfer", "hydra.run.dir=run", "trainer.enable_progress_bar=false",
              "data.per_class=40", "task.pretrain_trainer.max_epochs=1", "task.target_trainer.max_epochs=2",
              "task.target_trainer.check_val_every_n_epoch=1"], work, timeout=400)
    table = (work / "run" / "transfer.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["finetune", "linear_probe", "scratch"]
    sources = yaml.safe_load((work / "run" / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["config_sources"]
    assert {"path": "transferlab.conf", "schema": "pkg", "provider": "main"} in sources  # the wheel's own copy
    assert {"path": str(project / "configs"), "schema": "file", "provider": "command-line"} in sources
    assert "INFO" not in run.stdout + run.stderr and "Tip:" not in run.stdout + run.stderr  # the quiet console
    log = (work / "run" / "train.log").read_text()
    assert "[INFO] GPU available" in log and "Tip:" not in log  # INFO kept in the run's log file, adverts in neither
    assert [p.exists() for p in build_leftovers] == existed  # the wheel build left nothing in the checkout
