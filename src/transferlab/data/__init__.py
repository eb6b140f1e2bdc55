"""LightningDataModules. Each declares a DataSpec (input shape, classes, vocabulary)."""

from transferlab.data.spec import DataSpec

__all__ = ["DataSpec"]
