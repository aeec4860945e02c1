"""`foundation agent run`: the per-node daemon (issues 3 and 4)."""

from __future__ import annotations

from typing import Optional

import typer

from foundation_cli.commands.common import command, current, group

app = group(
    "agent",
    "The per-node Foundation agent (started on every node by `foundation up`).\n\n"
    "Example: FOUNDATION_NODE=node1 foundation agent run --explain",
)


@command(app, "run")
def run(
    node: Optional[str] = typer.Option(
        None, "--node", envvar="FOUNDATION_NODE", help="This node's Consul node name (default: the local agent's)."
    ),
) -> None:
    """Run the node agent in the foreground until SIGTERM.

    Registers `foundation-agent-<node>` with a TTL check, runs singletons this
    node holds and its replicated services, and hands singletons over at once
    on SIGTERM. --explain logs every raw Consul request it makes.

    Example: CONSUL_HTTP_ADDR=http://10.0.0.5:8500 foundation agent run --explain
    """
    from foundation_cli.agent.runner import Agent

    settings = current().settings
    code = Agent(settings, node=node, explain=settings.explain, verbose=settings.verbosity).run()
    if code:
        raise typer.Exit(code)


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    root.add_typer(app, name="agent", rich_help_panel="Placement")
