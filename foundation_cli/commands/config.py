"""`foundation config …`: cluster-wide config in KV (issue 5) and `config show` (issue 3)."""

from __future__ import annotations

import typer

from foundation_cli.commands.common import group

app = group(
    "config",
    "Cluster-wide configuration (KV under foundation/config/) and the resolved foundation.yaml.\n\n"
    "Example: foundation config set agent.log_level debug --cluster-wide",
)


def register(root: typer.Typer) -> None:
    """Add the `config` group to the root app."""
    root.add_typer(app, name="config", rich_help_panel="Configuration")
