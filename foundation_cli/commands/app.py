"""The ``foundation`` entry point: a lazy command tree, wired from one static index.

:data:`COMMANDS` lists every top-level command in the order ``foundation --help`` shows it: the
module under ``foundation_cli.commands`` that registers it, its help panel, and its one-line
summary. Running a command imports that module only (:class:`~foundation_cli.commands.usage.LazyGroup`);
``foundation --help`` is drawn from the index alone (:mod:`~foundation_cli.commands.root_help`),
without Typer or any command module. Nothing here works at import: the Typer app is built on
first use of :data:`app`.

Adding a command: register it in its module as usual, then add its line here (name, module, panel,
summary = the first paragraph of its docstring). ``tests/unit/test_command_index.py`` fails, saying
which line, until the index matches the tree.
"""

import sys  # no `from __future__ import annotations`: Typer reads the root callback's annotations at runtime
from typing import Any

HELP = """\
Turn a few machines into a Consul cluster and run things on it, showing every raw operation.

Example: [cyan]foundation start-singleton clock --explain -- sleep 1000[/cyan]
"""

# Global options go before or after the command; listed compactly to keep this help on one screen.
GLOBALS_HELP = (
    "Global options: --explain (show each raw operation) · --dry-run (print the writes as a script) · "
    "--json · --consul-addr · --token · -c/--config · --no-color · -q · -v (man foundation)."
)

# name: (module under foundation_cli.commands, panel in `foundation --help`, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "up": ("cluster", "Cluster", "Bring the cluster up: Consul and the node agent on every host (idempotent)."),
    "down": ("cluster", "Cluster", "Stop Consul and the node agent (consul leave); data kept unless --purge."),
    "consul": ("cluster", "Cluster", "Run the real consul CLI against this cluster (address and token set for you)."),
    "ssh": ("cluster", "Cluster", "Open SSH to a node with the cluster's SSH settings."),
    "init": ("init", "Cluster", "Write a commented starter foundation.yaml (mortal, apprentice or wizard)."),
    "start-singleton": (
        "placement",
        "Run things",
        "Run exactly one instance of CMD in the cluster; it moves when its node fails.",
    ),
    "start-replicated": (
        "placement",
        "Run things",
        "Run one instance of CMD on every eligible node, following membership.",
    ),
    "stop": ("placement", "Run things", "Stop every instance of NAME and remove its spec, lock and status."),
    "restart": ("placement", "Run things", "Restart every instance of NAME (a singleton stays on its node)."),
    "ps": ("placement", "Run things", "List placed services: node, pid, state, health, uptime, restarts, token."),
    "logs": (
        "placement",
        "Run things",
        "Print an instance's output (stdout+stderr, as the agent logs it on its node).",
    ),
    "broadcast": (
        "channels",
        "Use the cluster",
        "Send MESSAGE to every node's listeners on CHANNEL (a Consul user event).",
    ),
    "listen": (
        "channels",
        "Use the cluster",
        "Print messages on CHANNEL as they arrive (blocking queries on /v1/event/list).",
    ),
    "discover": ("discovery", "Use the cluster", "Find the instances of service NAME with their health."),
    "services": ("discovery", "Use the cluster", "List every service with its instance, node and check counts."),
    "status": (
        "health",
        "Use the cluster",
        "Cluster health on one screen (servers, members, services, checks, rates).",
    ),
    "metrics": ("health", "Use the cluster", "Health snapshot as Prometheus text (the numbers of `status --json`)."),
    "optimize": ("health", "Use the cluster", "Tuning recommendations, with evidence and the raw change (--explain)."),
    "advertise": ("mdns", "Cluster", 'Announce this machine on mDNS ("bootstrap me") until stopped.'),
    "discover-hosts": (
        "mdns",
        "Cluster",
        "List machines answering on the LAN (mDNS) and whose cluster they are in.",
    ),
    "drain": ("day2", "Cluster", "Move everything off NODE and keep it empty (maintenance) until `undrain`."),
    "undrain": ("day2", "Cluster", "Let NODE run things again (deletes the drain mark; maintenance ends)."),
    "exec": ("day2", "Cluster", "Run CMD on the chosen nodes over SSH, in parallel; a table of results."),
    "upgrade": ("day2", "Cluster", "Rolling restart or upgrade: followers, then the leader, then clients."),
    "config": ("config", "Cluster", "Cluster-wide settings (KV foundation/config/) and foundation.yaml."),
    "agent": ("agent", "Cluster", "The per-node Foundation agent (started on every node by `foundation up`)."),
    "snapshot": ("day2", "Cluster", "Save, restore and list Consul snapshots (KV, sessions, catalog, ACLs)."),
    "upgrade": ("day2", "Cluster", "Rolling restart or upgrade: followers, then the leader, then clients."),
    "kv": ("kv", "Use the cluster", "Read and write plain Consul KV under foundation/kv/."),
}


def _epilog() -> str:
    from foundation_cli.errors import EXIT_CODES_HELP

    return GLOBALS_HELP + "\n\n" + EXIT_CODES_HELP


def __getattr__(name: str) -> Any:
    """``app`` (the Typer app) and ``EPILOG`` are made on first use, not at import."""
    if name == "app":
        globals()["app"] = built = _build_app()
        return built
    if name == "EPILOG":
        return _epilog()
    raise AttributeError(name)


def _build_app():
    import inspect
    from typing import Optional

    import typer

    from foundation_cli import __version__
    from foundation_cli.commands import common
    from foundation_cli.commands.usage import LazyGroup

    class RootGroup(LazyGroup):
        index = COMMANDS

    app = typer.Typer(
        name="foundation",
        cls=RootGroup,  # lazy commands; usage errors as one `error:` line + hint, like every other error
        help=HELP,
        epilog=_epilog(),
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
    signature = inspect.signature(_root)
    _root.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD] + common.GLOBAL_PARAMETERS
    )
    _root.__annotations__ = {**_root.__annotations__, **{p.name: p.annotation for p in common.GLOBAL_PARAMETERS}}
    app.callback()(_root)
    return app


def main() -> None:
    """Console-script entry point: ``foundation --help`` straight from the index, the rest via Typer."""
    if sys.argv[1:] in (["--help"], ["-h"]):
        from foundation_cli.commands import root_help

        root_help.show()
        return
    __getattr__("app")(prog_name="foundation")
