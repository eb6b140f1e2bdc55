"""Every user-facing error: one clear line naming the key or file at fault, never a traceback.

The entry points (runner/entry.py) print `error: <message>` and exit with `exit_code` (2 unless
the class says otherwise); the sweep job wrapper records the failure under `reason`.
"""


class UserError(Exception):
    """A mistake in the user's config, overrides, files or data; reported as one line."""

    exit_code = 2
    reason = "user_error"


class ConfigError(UserError):
    """A config key holds a value that is invalid (wrong type, out of range, inconsistent)."""

    def __init__(self, key: str, value, valid: str):
        self.key, self.value, self.valid = key, value, valid
        super().__init__(f"{key}={value!r} is invalid: {valid}")


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, unsafe or does not match the model."""


class TrainingDiverged(UserError):
    """The loss became NaN/Inf; the run stopped (its last good checkpoint is kept)."""

    reason = "diverged"


class Preempted(UserError):
    """SIGTERM arrived; a checkpoint was saved. Exit code 143 (128 + SIGTERM), as schedulers expect."""

    exit_code = 143
    reason = "preempted"


class RankFailed(UserError):
    """Another rank of this DDP job exited with an error; the message names it and its reason."""

    reason = "rank_failed"


class InputError(UserError):
    """New inputs given to predict or serve do not fit the model (missing columns, wrong size, empty file);
    the server answers them with HTTP 400."""
