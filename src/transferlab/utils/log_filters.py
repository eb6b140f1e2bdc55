"""Logging filters of the run's console and log file (conf/hydra/default.yaml names them)."""

import logging


class NoAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip: try installing litlogger/litmodels" lines: product adverts, not run facts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")
