"""Shared backbones: map inputs to features; know their width and their ordered blocks."""

from transferlab.backbones.base import Backbone

__all__ = ["Backbone"]
