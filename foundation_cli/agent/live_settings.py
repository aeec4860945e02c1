"""Moved to :mod:`foundation_cli.core.live_settings` (the CLI validates cluster-wide settings with it too)."""

from foundation_cli.core.live_settings import *  # noqa: F403
from foundation_cli.core.live_settings import LIVE, OWNED, LiveSettings, check_timing, validate

__all__ = ["LIVE", "OWNED", "LiveSettings", "check_timing", "validate"]
