"""The ``foundation`` entry point: wires the command groups, nothing else."""

from __future__ import annotations

import inspect
from typing import Optional

import typer

from foundation_cli import __version__
from foundation_cli.commands import (
    agent,
    channels,
    cluster,
    common,
    config,
    day2,
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
Turn a few machines into a Consul cluster and run things on it, showing every raw operation.

Example: [cyan]foundation start-singleton clock --explain -- sleep 1000[/cyan]
"""

# Global options go before or after the command; listed compactly to keep this help on one screen.
GLOBALS_HELP = (
    "Global options: --explain (show each raw operation) · --dry-run (print the writes as a script) · "
    "--json · --consul-addr · --token · -c/--config · --no-color · -q · -v (man foundation)."
)

# Where each command appears in `foundation --help` (the wiring decides the layout, not the modules).
PANELS = {
    "Cluster": (
        "up",
        "down",
        "init",
        "config",
        "consul",
        "ssh",
        "advertise",
        "discover-hosts",
        "agent",
        "drain",
        "undrain",
        "exec",
        "snapshot",
        "upgrade",
    ),
    "Run things": ("start-singleton", "start-replicated", "stop", "restart", "ps", "logs"),
    "Use the cluster": ("broadcast", "listen", "discover", "services", "kv", "status", "metrics", "optimize"),
}

app = typer.Typer(
    name="foundation",
    cls=FoundationGroup,  # usage errors as one `error:` line + hint, like every other error
    help=HELP,
    epilog=GLOBALS_HELP + "\n\n" + EXIT_CODES_HELP,
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


# The root callback takes the same global options as every command (documented in GLOBALS_HELP).
_signature = inspect.signature(_root)
_root.__signature__ = _signature.replace(  # type: ignore[attr-defined]
    parameters=[p for p in _signature.parameters.values() if p.kind != p.VAR_KEYWORD] + common.GLOBAL_PARAMETERS
)
_root.__annotations__ = {**_root.__annotations__, **{p.name: p.annotation for p in common.GLOBAL_PARAMETERS}}
app.callback()(_root)

for module in (cluster, init, placement, channels, discovery, config, health, mdns, agent, day2):
    module.register(app)
app.add_typer(kv.app, name="kv")


def _place_in_panels() -> None:
    panel_of = {name: panel for panel, names in PANELS.items() for name in names}
    for info in app.registered_commands:
        info.rich_help_panel = panel_of.get(info.name or "", info.rich_help_panel)
    for group_info in app.registered_groups:
        group_info.rich_help_panel = panel_of.get(group_info.name or "", group_info.rich_help_panel)


_place_in_panels()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="foundation")
