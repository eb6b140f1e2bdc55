"""What the command-line entry points share: the config folder and one-line user errors."""

import functools
import logging
import os
import sys
from pathlib import Path

CONFIG_DIR = os.environ.get("TRANSFERLAB_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "conf"))


def report_user_errors(fn):
    """A UserError becomes one line on stderr and exit code 2; anything else keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from transferlab.errors import UserError

        try:
            return fn(*args, **kwargs)
        except UserError as e:
            logging.getLogger("transferlab").debug("user error", exc_info=True)
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapper
