"""Moved to :mod:`foundation_cli.cluster_state` (the settings read it, below every layer)."""

from foundation_cli.cluster_state import clear, load, save, state_dir, state_path

__all__ = ["clear", "load", "save", "state_dir", "state_path"]
