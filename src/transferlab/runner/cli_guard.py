"""Command-line checks that must run before Hydra writes anything (`.hydra/`, `multirun.yaml`) or
instantiates anything of its own (`hydra.callbacks`, launchers, sweepers, logging handlers).

- A literal secret (a value under a secret-looking key, or equal to a secret environment value)
  is refused: Hydra would write it to `.hydra/overrides.yaml` and `hydra.yaml`. The message says
  how to pass it instead: `key='${oc.env:VAR}'` (only the reference is written, never the value).
- Every `_target_` an override under `hydra.` sets goes through the same gate as the run's own
  targets (`config.instantiate.resolve_target`), and logging factories (`()`, `class`) cannot be
  set from the command line at all.
"""

from typing import Any

from transferlab.errors import ConfigError, UserError

LOGGING_FACTORY_KEYS = ("()", "class")


def _values(value: Any) -> list[Any]:
    """A sweep's choices, or the value itself."""
    items = getattr(value, "list", None)
    return list(items) if isinstance(items, list) else [value]


def _walk(node: Any, where: str):
    """(dotted key, value) of every leaf and dict entry of a parsed override value."""
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{where}.{k}"
            yield path, v
            yield from _walk(v, path)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}[{i}]")


def _leaves(node: Any):
    """Every scalar inside a parsed override value (the value itself when it is one)."""
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    else:
        yield node


def _is_literal_secret(value: Any) -> bool:
    """A value that holds text of its own: anything but empty, a boolean, a mask, or a pure reference
    (`${oc.env:VAR}`, `${config.key}`; `${oc.env:UNSET,abc123}` holds its default, so it is a literal)."""
    from transferlab.tracking.redact import is_reference

    if value is None or value == "" or isinstance(value, bool):
        return False
    return not is_reference(str(value)) and str(value) not in ("***", "null", "None")


def _env_hint(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1].upper()
    return f"{key}='${{oc.env:{'WANDB_API_KEY' if 'wandb' in key.lower() and 'key' in leaf.lower() else leaf}}}'"


def check_secret(arg: str, key: str, value: Any) -> None:
    from transferlab.tracking.redact import is_secret_name, secret_values

    for v in _values(value):
        pairs = [(key, v), *_walk(v, key)]
        for path, node in pairs:
            name = path.rsplit(".", 1)[-1].split("[", 1)[0].split("@", 1)[0]
            # under a secret-looking key, every text inside the value counts (a list or dict of secrets too)
            if is_secret_name(name) and any(_is_literal_secret(leaf) for leaf in _leaves(node)):
                raise UserError(f"{path}: a literal secret on the command line is refused (Hydra would write it to "
                                f".hydra/overrides.yaml); pass it from the environment: {_env_hint(path)}")
    for secret in secret_values():
        if secret in arg:
            raise UserError(f"{key}: the override holds the value of a secret environment variable (it would be written "
                            "to .hydra/); refer to the variable instead: ${oc.env:NAME}")


def check_hydra_override(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    from transferlab.config.instantiate import resolve_target

    if not (key == "hydra" or key.startswith("hydra.")):
        return
    for v in _values(value):
        pairs = [(key, v), *_walk(v, key)]
        for path, leaf in pairs:
            name = path.rsplit(".", 1)[-1]
            if "logging" in path and (name in LOGGING_FACTORY_KEYS or "()" in path):
                raise ConfigError(path, leaf, "not settable from the command line (a logging factory runs code); "
                                              "put custom logging in a config file under conf/hydra/")
            if name == "_target_":
                resolve_target(leaf, allowed, path)


def command_line_allowed(overrides: list) -> tuple[str, ...]:
    from transferlab.config.instantiate import DEFAULT_ALLOWED

    allowed, extra = list(DEFAULT_ALLOWED), []
    for o in overrides:
        if o.key_or_group == "allowed_targets" and isinstance(o.value(), list):
            allowed = [str(p) for p in o.value()]
        if o.key_or_group == "extra_allowed_targets" and isinstance(o.value(), list):
            extra = [str(p) for p in o.value()]
    return tuple(dict.fromkeys([*allowed, *extra]))


def typed_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """(argument, Hydra's parsed Override) for each `key=value` on a command line, before Hydra starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parsed.append((arg, parser.parse_overrides([arg])[0]))
        except Exception:  # Hydra reports syntax errors itself, in one line (runner/entry.py)
            continue
    return parsed


def check_command_line(args: list[str]) -> None:
    """Raise a UserError for the first override that must not reach Hydra."""
    parsed = typed_overrides(args)
    allowed = command_line_allowed([o for _, o in parsed])
    for arg, o in parsed:
        if o.is_delete():
            continue
        key, value = str(o.key_or_group), o.value()
        check_secret(arg, key, value)
        check_hydra_override(key, value, allowed)
