"""`_target_` instantiation restricted to the module prefixes the config tree allows."""

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from transferlab.errors import ConfigError

DEFAULT_ALLOWED = ("transferlab.", "torch.optim.", "pytorch_lightning.", "lightning.")


def check_targets(node: Any, allowed: tuple[str, ...] = DEFAULT_ALLOWED, where: str = "") -> None:
    """Refuse any `_target_` outside `allowed` (a config or a checkpoint cannot import arbitrary code)."""
    if isinstance(node, (DictConfig, dict)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_" and not any(str(value).startswith(p) for p in allowed):
                raise ConfigError(path, value, f"targets must start with one of {list(allowed)} "
                                               "(add your package's prefix to `allowed_targets`)")
            check_targets(value, allowed, path)
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, value in enumerate(node):
            check_targets(value, allowed, f"{where}[{i}]")


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

    check_targets(node, allowed)
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


def task_kind(task_cfg: Any) -> str:
    """`pretrain` or `finetune`: the `kind` of the task class a config names (imports it)."""
    from hydra.utils import get_class

    return getattr(get_class(str(task_cfg._target_)), "kind", "pretrain")
