"""`foundation init` and `foundation config show --effective`: write and inspect foundation.yaml (issue 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from foundation_cli.commands.common import command, current
from foundation_cli.commands.config import app as config_app

_init_app = typer.Typer()


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


def _show(
    effective: bool = typer.Option(True, "--effective/--file", help="The resolved config (default) or the raw file."),
) -> None:
    """Print the resolved foundation.yaml and the mode that produced it (secrets masked).

    Example: foundation config show --effective
    """
    from foundation_cli.core import cluster_config

    run = current()
    path = cluster_config.find_config_file(run.settings.config_path)
    if not effective:
        if path is None:
            run.out.info("no foundation.yaml (mortal mode)")
            return
        run.out.line(path.read_text(encoding="utf-8").rstrip("\n"))
        return
    cfg = cluster_config.load(run.settings.config_path)
    from foundation_cli.raw.secrets import redact

    data = cfg.to_dict()
    data["hosts"] = [{k: v for k, v in h.items() if v is not None} for h in data["hosts"]]
    data = redact(data)  # acl.tokens.*, encrypt, passwords: by key, whatever the value looks like
    if run.settings.json:
        run.out.json(data)
        return
    import yaml

    run.out.line(f"# mode: {cfg.mode} (from {cfg.source or 'no file: defaults'})")
    run.out.line(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n"))


def register(root: typer.Typer) -> None:
    """Add `init` to the root app and `show` to the `config` group."""
    command(root, "init", rich_help_panel="Cluster")(_init)
    command(config_app, "show")(_show)
