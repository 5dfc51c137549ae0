"""Persistence of runs, steps, events, checkpoints and lessons."""

from trinity.store.sqlite import Store

__all__ = ["Store"]
