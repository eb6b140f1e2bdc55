"""Classification metrics as torchmetrics objects (synced across processes)."""

from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
)


def classification_metrics(num_classes: int, calibration: bool = False) -> nn.ModuleDict:
    """acc, macro f1 (and expected calibration error) plus a size-weighted mean loss."""
    scores = {"acc": MulticlassAccuracy(num_classes, average="micro"), "f1": MulticlassF1Score(num_classes, average="macro")}
    if calibration:
        scores["ece"] = MulticlassCalibrationError(num_classes, n_bins=15, norm="l1")
    return nn.ModuleDict({"scores": MetricCollection(scores), "loss": MeanMetric()})
