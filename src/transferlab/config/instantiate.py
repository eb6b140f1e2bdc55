"""`_target_` instantiation restricted to what the config tree's `allowed_targets` allow.

The gate has two checks. The dotted string must start with an allowed prefix (so nothing outside
those packages is even imported), and the object it *resolves to* must be a class or function
whose own `__module__.__qualname__` starts with an allowed prefix: `torch.optim.torch.load` starts
with `torch.optim.` but resolves, through module attributes, to `torch.serialization.load` — refused.
"""

import importlib
import inspect
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from transferlab.errors import ConfigError

DEFAULT_ALLOWED = ("transferlab.", "torch.optim.", "pytorch_lightning.", "lightning.")
# keys of a `peft` node that hold the method's own optimizer / trainer / model defaults (read by those groups'
# interpolations), not constructor arguments; a pretraining stage drops them
PEFT_DEFAULT_KEYS = ("optimizer", "trainer", "model")
# keys of a `task` node that are not constructor arguments: what the callbacks config reads (`${task.monitor}`),
# and the task's own trainer defaults (read by conf/trainer/*.yaml's interpolations)
CALLBACK_KEYS = ("monitor", "monitor_mode")
TASK_DEFAULT_KEYS = ("trainer",)


def _prefix_ok(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name.startswith(p) for p in allowed)


def locate(path: str) -> Any:
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    if not path or any(not p.isidentifier() for p in parts):
        raise ValueError(f"'{path}' is not a dotted Python name")
    obj, i = None, len(parts)
    while i > 0:
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
            break
        except ModuleNotFoundError as e:
            if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
                raise  # a module that exists failed to import one of its own dependencies
            i -= 1
    if obj is None:
        raise ImportError(f"no module named '{parts[0]}'")
    for attr in parts[i:]:
        if not hasattr(obj, attr):
            raise AttributeError(f"module '{'.'.join(parts[:i])}' has no attribute '{attr}'" if obj is not None and inspect.ismodule(obj)
                                 else f"'{'.'.join(parts[:i])}' has no attribute '{attr}'")
        obj = getattr(obj, attr)
        i += 1
    return obj


def qualified_name(obj: Any) -> str | None:
    """`module.qualname` of a class or function (None for anything else: instances, modules, partials)."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        return None
    module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qual}" if isinstance(module, str) and isinstance(qual, str) else None


def resolve_target(value: Any, allowed: tuple[str, ...], key: str = "_target_") -> Any:
    """The class or function `value` names, if both the string and what it resolves to are allowed."""
    name = str(value)
    if not _prefix_ok(name, allowed):
        raise ConfigError(key, value, f"targets must start with one of {list(allowed)} "
                                      "(add your package's prefix to `allowed_targets`)")
    try:
        obj = locate(name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(key, value, f"an importable class or function ({e})") from None
    real = qualified_name(obj)
    if real is None:
        raise ConfigError(key, value, f"must name a class or function, not a {type(obj).__name__}")
    if not _prefix_ok(real, allowed):
        raise ConfigError(key, value, f"resolves to {real}, which is outside allowed_targets {list(allowed)} "
                                      "(a target is judged by what it is, not by how it is spelled)")
    return obj


def check_targets(node: Any, allowed: tuple[str, ...] = DEFAULT_ALLOWED, where: str = "", resolve: bool = False) -> None:
    """Refuse any `_target_` outside `allowed` (a config or a checkpoint cannot import arbitrary code).

    `resolve=False` checks the strings only (no import: validation's first pass); `resolve=True`
    also imports each target and checks the object it resolves to.
    """
    if isinstance(node, (DictConfig, dict)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                if not _prefix_ok(str(value), allowed):
                    raise ConfigError(path, value, f"targets must start with one of {list(allowed)} "
                                                   "(add your package's prefix to `allowed_targets`)")
                if resolve:
                    resolve_target(value, allowed, path)
            check_targets(value, allowed, path, resolve)
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, value in enumerate(node):
            check_targets(value, allowed, f"{where}[{i}]", resolve)


def widen_allowed_targets(cfg: DictConfig) -> None:
    """`allowed_targets` += `extra_allowed_targets` (a user's own prefixes, without retyping the built-ins).

    The entry points call this once on the composed config, so every reader of `allowed_targets` (builds,
    restores, validation, a stage's or a sweep job's copy) sees the one joined list.
    """
    extra = list(cfg.get("extra_allowed_targets") or [])
    if extra:
        cfg.allowed_targets = list(dict.fromkeys([*(cfg.get("allowed_targets") or []), *extra]))


def instantiate(node: Any, allowed: tuple[str, ...] = DEFAULT_ALLOWED, **kwargs: Any) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    from transferlab.errors import UserError

    check_targets(node, allowed, resolve=True)
    if isinstance(node, dict):
        node = OmegaConf.create(node)
    try:
        return hydra_instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):  # a constructor's own clear error, not Hydra's wrapper
            raise e.__cause__ from None
        raise


def to_plain(node: Any) -> Any:
    """Resolved plain Python containers (safe to store in a weights-only checkpoint)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def task_kind(task_cfg: Any, allowed: tuple[str, ...] = DEFAULT_ALLOWED) -> str:
    """`pretrain` or `finetune`: the `kind` of the task class a config names (imports it, through the gate)."""
    return getattr(resolve_target(task_cfg._target_, allowed, "task._target_"), "kind", "pretrain")
