"""`foundation up` / `down` / `init` / `config show` / `consul` / `ssh`: bring the cluster up and drop a layer (issue 3)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
