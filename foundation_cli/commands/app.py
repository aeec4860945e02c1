"""The ``foundation`` entry point: wires the command groups, nothing else."""

from __future__ import annotations

from typing import Optional

import typer

from foundation_cli import __version__
from foundation_cli.commands import (
    agent,
    channels,
    cluster,
    common,
    config,
    discovery,
    health,
    init,
    kv,
    mdns,
    placement,
)
from foundation_cli.commands.usage import FoundationGroup
from foundation_cli.errors import EXIT_CODES_HELP

HELP = """\
Turn a handful of machines into a working Consul cluster, and run things on it.

Every command is a thin facade over a real tool and can show what it does:
[bold]--explain[/bold] performs it and prints each raw operation (curl, consul, ssh);
[bold]--dry-run[/bold] prints the writes as a runnable script and changes nothing.

Example: [cyan]foundation kv put app/mode blue --explain[/cyan]
"""

app = typer.Typer(
    name="foundation",
    cls=FoundationGroup,  # usage errors as one `error:` line + hint, like every other error
    help=HELP,
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"foundation {__version__}")
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    **global_values,
) -> None:
    common.store_root_globals(ctx, global_values)


# The root callback takes the same global options as every command.
_root.__signature__ = (
    __import__("inspect")
    .signature(_root)
    .replace(  # type: ignore[attr-defined]
        parameters=[p for p in __import__("inspect").signature(_root).parameters.values() if p.kind != p.VAR_KEYWORD]
        + common.GLOBAL_PARAMETERS
    )
)
_root.__annotations__ = {**_root.__annotations__, **{p.name: p.annotation for p in common.GLOBAL_PARAMETERS}}
app.callback()(_root)

# Each module adds its own commands; the rich_help_panel groups them in --help.
for module in (cluster, init, placement, channels, discovery, config, health, mdns, agent):
    module.register(app)
app.add_typer(kv.app, name="kv", rich_help_panel="Data")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="foundation")
