"""Supervised pretraining: classify the source labels."""

from transferlab.tasks.classifier import ClassifierTask


class SupervisedTask(ClassifierTask):
    kind = "pretrain"
