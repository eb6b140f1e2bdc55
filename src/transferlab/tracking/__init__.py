"""Where metrics go: loggers (W&B), the persistent run id, and secret redaction."""
