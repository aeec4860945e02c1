"""`foundation agent run`: the per-node daemon (issues 3 and 4)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
