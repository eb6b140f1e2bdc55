"""Keep secrets (API keys, tokens, passwords) out of everything a run writes.

A secret is the value of an environment variable whose name looks like one (WANDB_API_KEY,
HF_TOKEN, AWS_SECRET_ACCESS_KEY, ...) or of a config key whose name does. Saved configs
(.hydra/*.yaml, the checkpoint's stored config), logs and metrics.json get `***` instead.
"""

import os
import re
from pathlib import Path
from typing import Any

# config keys (the last part of a dotted key, any case; camelCase and hyphens read as snake_case, so
# clientSecret = client_secret, private-key = private_key): a name ending in api_key / apikey / access_key /
# private_key / secret_key / auth_key / wandb_key / hf_key / openai_key / aws_key / license_key / signing_key,
# or in secret(s) / password(s) / passwd / credential(s), or `token` alone or ending in auth_token / oauth_token /
# access_token / api_token / hf_token / wandb_token / bearer_token / github_token / gh_token / refresh_token /
# session_token / private_token / bot_token / id_token / sas_token.
# Not secret: pad_token, max_tokens, monitor_key, label_key (data names that merely contain the words).
SECRET_NAME = re.compile(r"(^|_)((api|access|private|secret|auth|wandb|hf|openai|aws|license|signing)_?key|apikey"
                         r"|secrets?|passwords?|passwd|credentials?"
                         r"|(auth|oauth|access|api|hf|wandb|bearer|github|gh|refresh|session|private|bot|id|sas)_?token)$"
                         r"|^token$", re.IGNORECASE)
# environment variables: the above, or any name ending in KEY / TOKEN / SECRET (HF_TOKEN, OPENAI_API_KEY)
SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
# a value that only refers to a secret, never holds one: `${oc.env:VAR}` (optionally `,null` / `,''` as its
# default) or `${other.config.key}`; a default with text in it (`${oc.env:UNSET,abc123}`) is a literal
REFERENCE = re.compile(r"^\$\{\s*(oc\.env:\s*[A-Za-z_][A-Za-z0-9_]*\s*(,\s*(null|''|\"\")?\s*)?|[A-Za-z_][\w.]*)\}$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(name: str) -> bool:
    """Whether a config key (its last part) or an environment variable's name looks like it holds a secret."""
    return bool(SECRET_NAME.search(_CAMEL.sub("_", name).replace("-", "_")))


def is_reference(value: Any) -> bool:
    """`${oc.env:VAR}` or `${config.key}`: the text names where the secret is, and holds none of it."""
    return isinstance(value, str) and bool(REFERENCE.match(value.strip()))


MASK = "***"
MIN_LENGTH = 6  # shorter values are too likely to occur by chance in a config


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables, longest first (so no partial masking)."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if (SECRET_ENV.search(k) or is_secret_name(k)) and len(v) >= MIN_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, values: list[str] | None = None) -> str:
    for v in secret_values() if values is None else values:
        text = text.replace(v, MASK)
    return text


def redact(node: Any, values: list[str] | None = None) -> Any:
    """A copy of plain containers with secret-named keys and secret values masked."""
    values = secret_values() if values is None else values
    if isinstance(node, dict):
        return {k: (_masked(v) if isinstance(k, str) and is_secret_name(k) else redact(v, values)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(redact(v, values) for v in node)
    if isinstance(node, str):
        return redact_text(node, values)
    return node


def _masked(value: Any) -> Any:
    """What a secret-named key's value becomes: every text or number in it masked (None, '' and booleans kept)."""
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_masked(v) for v in value)
    return value if value is None or value == "" or isinstance(value, bool) else MASK


def mask_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides as a record may show them: a secret-named key's value and secret values masked."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        secret = sep and is_secret_name(key.lstrip("+~").rsplit(".", 1)[-1].split("@", 1)[0]) and value not in ("", "null")
        out.append(redact_text(f"{key}={MASK}" if secret else o))
    return out


def mask_text(text: str) -> str:
    """Secret environment values and `secret_key: value` lines of a text (a YAML dump, a config tree) masked."""
    return _mask_secret_keys(redact_text(text))


def redact_files(folder: str | Path, patterns: tuple[str, ...] = (".hydra/*.yaml",)) -> list[Path]:
    """Mask secret values (and `secret_key: value` lines) in a run folder's text files; returns the files changed."""
    from transferlab.utils.io import atomic_write_text

    folder, values, changed = Path(folder), secret_values(), []
    for pattern in patterns:
        for path in folder.glob(pattern):
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            new = _mask_secret_keys(redact_text(text, values))
            if new != text:
                atomic_write_text(path, new)
                changed.append(path)
    return changed


# a `key: value` / `- key=value` line, also inside a rich tree's guides (`│   └── key: value`)
_KEY_LINE = re.compile(r"^(?P<lead>[ \t│├└─]*-?[ \t]*['\"]?(?P<key>[\w.+~-]+)['\"]?[ \t]*[:=][ \t]*)(?P<value>\S.*)$", re.MULTILINE)


def _mask_secret_keys(text: str) -> str:
    """`api_key: abc` / `- logger.wandb.api_key=abc` -> masked (yaml dumps and override lists)."""

    def sub(m: re.Match) -> str:
        key = m.group("key").rsplit(".", 1)[-1].lstrip("+~")
        value = m.group("value").strip()
        if is_secret_name(key) and not is_reference(value) and value not in ("null", "''", '""'):
            return m.group("lead") + MASK
        return m.group(0)

    return _KEY_LINE.sub(sub, text)


class RedactingFilter:
    """A logging filter that masks secret values in every record before any handler writes it."""

    def __init__(self) -> None:
        self.values = secret_values()

    def filter(self, record) -> bool:
        if self.values:
            message = record.getMessage()
            masked = redact_text(message, self.values)
            if masked != message:
                record.msg, record.args = masked, ()
        return True


def install_log_filter() -> None:
    """Attach a RedactingFilter to the root logger's handlers (Hydra's console and file handlers)."""
    import logging

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
