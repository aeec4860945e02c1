"""Moved to :mod:`foundation_cli.core.timing` (the CLI and the optimizer rules use it too)."""

from foundation_cli.core.timing import *  # noqa: F403
from foundation_cli.core.timing import Timing

__all__ = ["Timing"]
