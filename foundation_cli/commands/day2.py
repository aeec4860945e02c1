"""Day-2 operations: `drain` / `undrain`, `snapshot save|restore|list` (docs/day2.md)."""

from __future__ import annotations

import getpass
import socket
from typing import Optional

import typer

from foundation_cli.commands.common import command, current, group, timeout_option
from foundation_cli.commands.completion import node_names

PANEL = "Cluster"

snapshot_app = group("snapshot", "Save, restore and list Consul snapshots (KV, sessions, catalog, ACLs).")


def _explain_agent(node: str, *, drain: bool) -> None:
    from foundation_cli.facades.drain import agent_side_operations
    from foundation_cli.raw import render

    run = current()
    if not run.settings.explain:
        return
    err = run.out.stderr
    err.write(f"# What the agent on {node} does next (sent by that agent, not by this command):\n")
    for why, op in agent_side_operations(node, run.settings.consul_addr or "", drain=drain):
        err.write(f"#   {why}\n")
        for line in render.render_lines(op):
            err.write(f"    {line}\n")
    err.flush()


def _drainer():
    from foundation_cli.facades.drain import Drainer

    run = current()
    return Drainer(run.consul(), dry_run=run.settings.dry_run)


def drain(
    node: str = typer.Argument(..., help="The Consul node to drain.", autocompletion=node_names),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why (shown by ps/status and in Consul)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Return once the mark is stored."),
    timeout: float = timeout_option(60.0, "How long to wait for the node to empty"),
) -> None:
    """Move everything off NODE and keep it empty (maintenance) until `undrain`.

    Writes foundation/drain/NODE; that node's agent stops its instances, releases
    each singleton lock right after its process stopped (another node starts it
    at once, no lock-delay), and puts its node in Consul maintenance. The mark
    survives agent restarts and `foundation up`.

    Example: foundation drain node-2 --reason "disk swap"
    """
    run = current()
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    result = _drainer().drain(node, reason=reason, by=by, wait=not no_wait, timeout=timeout)
    _explain_agent(node, drain=True)
    if run.settings.dry_run:
        return
    parts = [f"{node} drained" if result.changed else f"{node} already drained"]
    if result.moved:
        parts.append("moved: " + ", ".join(f"{k} → {v or '?'}" for k, v in sorted(result.moved.items())))
    if result.stopped:
        parts.append("stopped there: " + ", ".join(result.stopped))
    if result.waited:
        parts.append("in maintenance" if result.maintenance else "NOT in maintenance yet")
    run.out.result(result.to_dict(), text="; ".join(parts))
    if result.pending:
        from foundation_cli.errors import PartialFailure

        raise PartialFailure(
            f"not finished after {timeout:.0f}s: {'; '.join(result.pending)}",
            hint=f"`foundation ps` and the agent log on {node}; the mark stays, the agent keeps trying",
        )


def undrain(
    node: str = typer.Argument(..., help="The drained node.", autocompletion=node_names),
    no_wait: bool = typer.Option(False, "--no-wait", help="Return once the mark is deleted."),
    timeout: float = timeout_option(30.0, "How long to wait for maintenance to end"),
) -> None:
    """Let NODE run things again (deletes the drain mark; maintenance ends).

    Example: foundation undrain node-2
    """
    run = current()
    result = _drainer().undrain(node, wait=not no_wait, timeout=timeout)
    _explain_agent(node, drain=False)
    if run.settings.dry_run:
        return
    text = f"{node} undrained" if result.changed else f"{node} was not drained"
    run.out.result(result.to_dict(), text=text)
    if result.pending:
        from foundation_cli.errors import PartialFailure

        raise PartialFailure(f"{node}: {'; '.join(result.pending)} after {timeout:.0f}s")


# ------------------------------------------------------------------------------------ snapshot


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    command(root, "drain", rich_help_panel=PANEL)(drain)
    command(root, "undrain", rich_help_panel=PANEL, hidden=True)(undrain)
