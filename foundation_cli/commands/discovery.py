"""`foundation discover` / `services`: service discovery with health (issue 5)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
