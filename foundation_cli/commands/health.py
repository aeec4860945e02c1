"""`foundation status` / `metrics` / `optimize`: HealthMonitor and Optimizer (issue 6)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
