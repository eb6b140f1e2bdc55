"""LightningModules: pretraining objectives and fine-tuning, all owning `self.backbone`."""
