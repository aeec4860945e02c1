"""Day-2 operations: `drain` / `undrain`, `snapshot save|restore|list`, `exec`, `upgrade` (docs/day2.md)."""

from __future__ import annotations

import getpass
import socket
from typing import Optional

import typer

from foundation_cli.commands.common import command, current, group, timeout_option
from foundation_cli.commands.completion import node_names

PANEL = "Cluster"

snapshot_app = group(
    "snapshot",
    "Save, restore and list Consul snapshots (KV, sessions, catalog, ACLs).\n\n"
    "Example: foundation snapshot save backup.snap",
)


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


def _snapshots():
    from foundation_cli.facades.snapshots import Snapshots

    run = current()
    return Snapshots(run.consul(), dry_run=run.settings.dry_run)


@command(snapshot_app, "save")
def snapshot_save(
    file: str = typer.Argument(..., help="Where to write the snapshot (mode 0600: it holds ACL tokens)."),
    from_scheduled: bool = typer.Option(
        False, "--from-scheduled", help="Fetch the newest scheduled snapshot (or --id) instead of taking one."
    ),
    snap_id: Optional[str] = typer.Option(None, "--id", help="With --from-scheduled: this one (`snapshot list`)."),
    stale: bool = typer.Option(False, "--stale", help="Let any server answer (no leader needed)."),
) -> None:
    """Save the servers' state (KV, sessions, catalog, ACLs) to FILE.

    GET /v1/snapshot, or a snapshot the leader's agent took on schedule
    (snapshot.interval / snapshot.keep, cluster-wide config) with --from-scheduled.

    Example: foundation snapshot save backup.snap
    """
    from pathlib import Path

    from foundation_cli.errors import UsageError
    from foundation_cli.facades.snapshots import write_private

    run = current()
    if snap_id and not from_scheduled:
        raise UsageError("--id picks a scheduled snapshot: use it with --from-scheduled")
    snaps = _snapshots()
    if from_scheduled:
        entry = snaps.pick(snap_id)
        archive = snaps.fetch(entry)
        if run.settings.dry_run:
            return
        write_private(Path(file), archive)
        data = {"file": file, "size": len(archive), "sha256": entry.sha256, "scheduled": entry.to_dict()}
        run.out.result(
            data, text=f"saved scheduled snapshot {entry.id} from {entry.node} to {file} ({len(archive)} bytes)"
        )
        return
    data = snaps.save(Path(file), stale=stale)
    run.out.result(data, text=f"saved snapshot to {file} ({data['size']} bytes, sha256 {data['sha256'][:12]}…)")


@command(snapshot_app, "restore")
def snapshot_restore(
    file: str = typer.Argument(..., help="A snapshot from `snapshot save`."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Replace the servers' state with FILE (PUT /v1/snapshot); asks first.

    Everything in KV, the catalog, sessions and ACLs goes back to the moment of
    the snapshot; singleton holders whose session is gone stop and contend again.

    Example: foundation snapshot restore backup.snap --yes
    """
    from pathlib import Path

    run = current()
    if not yes and not run.settings.dry_run:
        run.out.confirm(
            f"replace the whole cluster state with {file}?",
            no_answer="restoring a snapshot replaces the cluster state: not done without a yes (stdin is not a terminal)",
            no_answer_hint="re-run with --yes",
            declined="not restored: the answer was not yes",
        )
    data = _snapshots().restore(Path(file))
    if run.settings.dry_run:
        return
    run.out.result(data, text=f"restored {file} ({data['size']} bytes)")


@command(snapshot_app, "list")
def snapshot_list() -> None:
    """List the scheduled snapshots (newest last): id, node, size, when.

    Example: foundation snapshot list --json
    """
    import time

    run = current()
    entries = _snapshots().list()
    if run.settings.json:
        run.out.json([e.to_dict() for e in entries])
        return
    if not entries:
        run.out.info("no scheduled snapshots (foundation config set snapshot.interval 1h --cluster-wide)")
        return
    rows = [
        (e.id, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.taken)), e.node, e.size, e.sha256[:12], e.path)
        for e in entries
    ]
    run.out.table(("ID", "TAKEN", "NODE", "BYTES", "SHA256", "PATH"), rows)


# ------------------------------------------------------------------------------------ exec


def exec_(
    cmd: Optional[list[str]] = typer.Argument(
        None, help="The command, after `--` (joined with spaces, like ssh).", show_default=False
    ),
    node: Optional[list[str]] = typer.Option(None, "--node", help="This node (repeatable).", autocompletion=node_names),
    service: Optional[str] = typer.Option(None, "--service", help="Every node running this Consul service."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Nodes whose service has this tag (with --service: of it)."),
    all_nodes: bool = typer.Option(False, "--all", help="Every node in the catalog."),
    parallel: int = typer.Option(10, "--parallel", min=1, max=100, help="At most this many SSH sessions at once."),
    timeout: float = timeout_option(120.0, "How long CMD may run on each node"),
) -> None:
    """Run CMD on the chosen nodes over SSH, in parallel; a table of results.

    Not `consul exec`: plain SSH with the cluster's per-host settings. A table
    (node, exit code, duration, first lines); the full output with --json; exit 7
    when CMD failed or could not run somewhere.

    Example: foundation exec --all -- uptime
    """
    from foundation_cli.errors import PartialFailure, UsageError
    from foundation_cli.facades import remote_exec

    run = current()
    command = " ".join(cmd or []).strip()
    if not command:
        raise UsageError("no command given", hint="foundation exec --all -- uptime")
    targets = remote_exec.select_nodes(run.consul(), nodes=node, service=service, tag=tag, all_nodes=all_nodes)
    results = remote_exec.run_on(targets, command, timeout=timeout, parallel=parallel, dry_run=run.settings.dry_run)
    if run.settings.dry_run:
        return
    if run.settings.json:
        run.out.json([r.to_dict() for r in results])
    else:
        rows = [
            (r.node, "-" if r.exit_code is None else r.exit_code, f"{r.duration:.2f}s", r.first_lines())
            for r in results
        ]
        run.out.table(("NODE", "EXIT", "TIME", "OUTPUT"), rows)
    failed = [r.node for r in results if not r.ok]
    if failed:
        raise PartialFailure(f"failed on {len(failed)} of {len(results)} nodes: {', '.join(failed)}")


# ------------------------------------------------------------------------------------ upgrade


def upgrade(
    consul_binary: Optional[str] = typer.Option(
        None, "--consul-binary", help="A consul binary to put in place of the running one on every node."
    ),
    agent: bool = typer.Option(False, "--agent", help="Also install this machine's node agent and restart it."),
    force: bool = typer.Option(False, "--force", help="Go on although failure tolerance is 0 (an outage)."),
    timeout: float = timeout_option(180.0, "How long each node may take to come back"),
) -> None:
    """Rolling restart or upgrade: followers, then the leader, then clients.

    Each node is drained first (its singletons move), restarted (with
    --consul-binary: that binary replaces the running one), and must be back
    (alive; for servers, autopilot healthy with its failure tolerance restored)
    before the next. Refuses when failure tolerance is 0 unless --force;
    --dry-run shows the order.

    Example: foundation upgrade --consul-binary ./consul --dry-run
    """
    from pathlib import Path

    from foundation_cli.errors import PartialFailure, UsageError
    from foundation_cli.facades.upgrade import Upgrader

    run = current()
    binary = None
    if consul_binary:
        try:
            binary = Path(consul_binary).expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"{consul_binary}: cannot read: {exc.strerror or exc}") from None
        if binary[:4] != b"\x7fELF":
            raise UsageError(f"{consul_binary}: not an executable (ELF) file")
    upgrader = Upgrader(run.consul(), dry_run=run.settings.dry_run, say=run.out.info)
    steps, tolerance = upgrader.plan(force=force)
    steps = upgrader.run(steps, tolerance=tolerance, binary=binary, agent=agent, timeout=timeout)
    if run.settings.json:
        run.out.json({"failure_tolerance": tolerance, "steps": [s.to_dict() for s in steps]})
    else:
        rows = [
            (
                n + 1,
                s.node,
                s.role,
                s.result,
                f"{s.seconds:.1f}s" if s.seconds else "-",
                s.detail or ", ".join(s.actions),
            )
            for n, s in enumerate(steps)
        ]
        run.out.table(("#", "NODE", "ROLE", "RESULT", "TIME", "ACTIONS / DETAIL"), rows)
    failed = [s.node for s in steps if s.result == "failed"]
    if failed:
        raise PartialFailure(f"upgrade stopped at {failed[0]}: {next(s.detail for s in steps if s.result == 'failed')}")


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    command(root, "drain", rich_help_panel=PANEL)(drain)
    command(root, "undrain", rich_help_panel=PANEL)(undrain)
    root.add_typer(snapshot_app, name="snapshot", rich_help_panel=PANEL)
    command(root, "exec", rich_help_panel=PANEL)(exec_)
    command(root, "upgrade", rich_help_panel=PANEL)(upgrade)
