"""`foundation init`: write a commented starter foundation.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from foundation_cli.commands.common import command, current


def _init(
    mode: str = typer.Option("apprentice", "--mode", "-m", help="mortal | apprentice | wizard."),
    path: Optional[str] = typer.Option(None, "--path", help="Where to write it (default ./foundation.yaml)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter foundation.yaml (mortal, apprentice or wizard).

    Example: foundation init --mode apprentice
    """
    from foundation_cli.core import cluster_config
    from foundation_cli.errors import ConflictError, UsageError

    run = current()
    text = cluster_config.starter(mode)
    target = Path(path or cluster_config.FILE_NAME)
    if target.exists() and not force:
        raise ConflictError(f"{target} already exists", hint="use --force to overwrite it")
    if run.settings.dry_run:
        run.out.info(f"would write {target} ({mode} mode)")
        run.out.stderr.write(text)
        return
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None
    run.out.result({"path": str(target), "mode": mode}, text=f"wrote {target} ({mode} mode)")


def register(root: typer.Typer) -> None:
    """Add `init` to the root app."""
    command(root, "init", rich_help_panel="Cluster")(_init)
