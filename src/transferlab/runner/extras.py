"""`extras` (lightning-hydra-template's run-start utilities): silence warnings, enforce tags in sweeps,
print the resolved config as a tree (also saved as `config_tree.log` in the run folder)."""

import io
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError
from transferlab.utils.hydra import in_multirun
from transferlab.utils.io import atomic_write_text

# Lightning warnings a user can do nothing about (repeated once per stage): kept out of the console
NOT_ACTIONABLE = (
    r".*isinstance\(treespec, LeafSpec\)",       # Lightning's pytree use under newer torch
    r".*smaller than the logging interval",        # tiny datasets (few-label stages): nothing to log per N steps
    r".*does not have many workers",               # in-memory tensors: workers would only add start-up time
)
# the tree shows these groups first (the rest follow in config order)
TREE_FIRST = ("data", "model", "task", "peft", "optimizer", "scheduler", "trainer", "callbacks", "logger")


def apply_extras(cfg: DictConfig, out: Path) -> None:
    extras = cfg.get("extras") or {}
    for message in NOT_ACTIONABLE:
        warnings.filterwarnings("ignore", message=message)
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("enforce_tags") and in_multirun() and not cfg.get("tags"):
        raise ConfigError("tags", list(cfg.get("tags") or []),
                          "a non-empty list in a sweep while extras.enforce_tags=true (e.g. 'tags=[lr_sweep]')")
    if extras.get("print_config"):
        from transferlab.tracking.redact import mask_text

        text = mask_text(config_tree(cfg))  # secret-named keys are masked in the tree; this masks env values left in text
        print(text, flush=True)
        atomic_write_text(out / "config_tree.log", text + "\n")


def _plain(cfg: DictConfig, key: str):
    """A group's value resolved, or as written where it refers to a key this config does not have (a pipeline's
    stage keys, e.g. `${task.monitor}`, resolve per stage)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = cfg[key]
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    except OmegaConfBaseException:
        node = cfg._get_node(key)  # public API resolves on access; only the node gives the text as written
        return OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node._value()


def config_tree(cfg: DictConfig) -> str:
    """The resolved config as a `rich` tree: one branch per group, its YAML as the leaf; secret-named keys masked."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    from transferlab.tracking.redact import redact

    tree = Tree("CONFIG", guide_style="dim")
    keys = [k for k in TREE_FIRST if k in cfg] + [k for k in cfg if k not in TREE_FIRST and k != "hydra"]
    for key in keys:
        value = redact({key: _plain(cfg, key)})[key]
        branch = tree.add(str(key))
        text = OmegaConf.to_yaml(value) if isinstance(value, (dict, list)) else str(value)
        branch.add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    buffer = io.StringIO()
    Console(file=buffer, width=110, color_system=None).print(tree)
    return buffer.getvalue().rstrip()
