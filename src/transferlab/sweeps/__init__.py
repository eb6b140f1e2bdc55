"""Hydra multirun support: the job wrapper (a failing job never ends a sweep) and the sweep summary."""
