"""User-facing errors: one clear line naming the key or file at fault, never a traceback."""


class UserError(Exception):
    """A mistake in the user's config, overrides, files or data; reported as one line."""


class ConfigError(UserError):
    """A config key holds a value that is invalid (wrong type, out of range, inconsistent)."""

    def __init__(self, key: str, value, valid: str):
        self.key, self.value, self.valid = key, value, valid
        super().__init__(f"{key}={value!r} is invalid: {valid}")


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, unsafe or does not match the model."""
