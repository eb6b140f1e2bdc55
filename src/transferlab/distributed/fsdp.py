"""FSDP: which modules become FSDP units (referenced from conf/trainer/fsdp.yaml)."""

from transferlab.errors import ConfigError


def block_wrap_policy(block_classes: list[str], allowed: tuple[str, ...] = ("transferlab.", "torch.nn.")) -> set[type]:
    """FSDP auto-wrap policy (a set of module classes): each backbone block becomes one FSDP unit.

    Wrapping per block (not per layer, not the whole model) is what lets FSDP gather one
    block's weights at a time; the classes are named in the config (`trainer.strategy`).
    """
    from transferlab.config.instantiate import resolve_target

    classes: set[type] = set()
    for name in block_classes:
        cls = resolve_target(name, allowed, "trainer.strategy.auto_wrap_policy.block_classes")
        if not isinstance(cls, type):
            raise ConfigError("trainer.strategy.auto_wrap_policy.block_classes", name,
                              f"a module class under one of {list(allowed)}")
        classes.add(cls)
    return classes
