"""transferlab: pretrain a backbone, transfer it, measure how well it generalizes."""

__version__ = "0.1.0"
