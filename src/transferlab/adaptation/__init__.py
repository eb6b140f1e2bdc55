"""Fine-tuning methods: how a (pretrained) backbone is adapted. Selected by the `peft` group."""

from transferlab.adaptation.base import Adaptation

__all__ = ["Adaptation"]
