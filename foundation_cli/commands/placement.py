"""`foundation start-singleton` / `start-replicated` / `stop` / `restart` / `ps` / `logs` (issue 4)."""

from __future__ import annotations

import time
from typing import Optional

import typer

from foundation_cli.commands.common import command, current, timeout_option
from foundation_cli.commands.completion import node_names, service_names

PANEL = "Placement"
app = typer.Typer()

_NAME_HELP = "Service name (a DNS label: a-z, 0-9, '-')."


def _manager():
    from foundation_cli.facades.process_manager import ProcessManager

    run = current()
    return ProcessManager(run.consul(), dry_run=run.settings.dry_run)


def _explain_agents(spec) -> None:
    """--explain: what the node agents do for this spec, and the hand-run equivalent."""
    from foundation_cli.facades.process_manager import agent_side_operations, raw_equivalent
    from foundation_cli.raw import render

    run = current()
    if not run.settings.explain:
        return
    err = run.out.stderr
    err.write("# What the node agents do next (sent by the agents, not by this command):\n")
    for why, op in agent_side_operations(spec, run.settings.address, token=bool(run.settings.token)):
        err.write(f"#   {why}\n")
        for line in render.render_lines(op):
            err.write(f"    {line}\n")
    err.write("# By hand, without Foundation (no self-fencing; consul lock's lock-delay is 15 s):\n")
    err.write(f"    {raw_equivalent(spec)}\n")
    err.flush()


def _start(
    mode: str,
    name: str,
    cmd: Optional[list[str]],
    env: Optional[list[str]],
    cwd: Optional[str],
    port: Optional[int],
    tag: Optional[list[str]],
    check_http: Optional[str],
    check_tcp: Optional[str],
    restart: str,
    node_meta: Optional[list[str]],
    no_wait: bool,
    timeout: float,
    user: Optional[str] = None,
) -> None:
    from foundation_cli.core.service_spec import ServiceSpec, parse_env, parse_node_meta

    spec = ServiceSpec(
        name=name,
        mode=mode,
        command=list(cmd or []),
        env=parse_env(env),
        cwd=cwd,
        port=port,
        tags=list(tag or []),
        check_http=check_http,
        check_tcp=check_tcp,
        restart=restart,
        node_meta=parse_node_meta(node_meta),
        user=user,
    ).validate()
    run = current()
    result = _manager().start(spec, wait=not no_wait, timeout=timeout)
    _explain_agents(result.spec)
    if run.settings.dry_run:
        return
    if result.instances:
        where = ", ".join(f"{i.node} (pid {i.pid})" for i in result.instances)
        text = f"{name} running on {where}"
    elif not result.changed:
        text = f"{name} unchanged (generation {result.spec.generation})"
    else:
        text = f"{name} stored (generation {result.spec.generation}); the node agents start it"
    run.out.result(result.to_dict(), text=text)


_CMD = typer.Argument(None, help="The command and its arguments, after `--`.", show_default=False)
_ENV = typer.Option(None, "--env", "-e", help="Environment K=V for the process (repeatable).")
_CWD = typer.Option(None, "--cwd", help="Working directory on the node (absolute).")
_PORT = typer.Option(None, "--port", help="Port registered with the Consul service (also $PORT).")
_TAG = typer.Option(None, "--tag", help="Consul service tag (repeatable).")
_HTTP = typer.Option(None, "--check-http", help="Health check URL (else: process alive).")
_TCP = typer.Option(None, "--check-tcp", help="Health check HOST:PORT (else: process alive).")
_RESTART = typer.Option("always", "--restart", help="always | on-failure | never (with backoff).")
_META = typer.Option(None, "--node-meta", help="Only on nodes with this Consul node meta K=V (repeatable).")
_NO_WAIT = typer.Option(False, "--no-wait", help="Return once the spec is stored.")
_USER = typer.Option(None, "--user", help="Run CMD as this user on the node (default: as the agent, root).")
_TIMEOUT = timeout_option(60.0, "How long to wait until it runs")


@command(app, "start-singleton", rich_help_panel=PANEL)
def start_singleton(
    name: str = typer.Argument(..., help=_NAME_HELP, autocompletion=service_names),
    cmd: Optional[list[str]] = _CMD,
    env: Optional[list[str]] = _ENV,
    cwd: Optional[str] = _CWD,
    port: Optional[int] = _PORT,
    tag: Optional[list[str]] = _TAG,
    check_http: Optional[str] = _HTTP,
    check_tcp: Optional[str] = _TCP,
    restart: str = _RESTART,
    node_meta: Optional[list[str]] = _META,
    no_wait: bool = _NO_WAIT,
    timeout: float = _TIMEOUT,
    user: Optional[str] = _USER,
) -> None:
    """Run exactly one instance of CMD in the cluster; it moves when its node fails.

    The node agents contend for foundation/locks/NAME; the holder runs CMD and
    stops it before anyone else may start it (self-fencing). Prints where it runs.

    Example: foundation start-singleton cron --env TZ=UTC -- python3 /opt/cron.py
    """
    _start(
        "singleton", name, cmd, env, cwd, port, tag, check_http, check_tcp, restart, node_meta, no_wait, timeout, user
    )


@command(app, "start-replicated", rich_help_panel=PANEL)
def start_replicated(
    name: str = typer.Argument(..., help=_NAME_HELP, autocompletion=service_names),
    cmd: Optional[list[str]] = _CMD,
    env: Optional[list[str]] = _ENV,
    cwd: Optional[str] = _CWD,
    port: Optional[int] = _PORT,
    tag: Optional[list[str]] = _TAG,
    check_http: Optional[str] = _HTTP,
    check_tcp: Optional[str] = _TCP,
    restart: str = _RESTART,
    node_meta: Optional[list[str]] = _META,
    no_wait: bool = _NO_WAIT,
    timeout: float = _TIMEOUT,
    user: Optional[str] = _USER,
) -> None:
    """Run one instance of CMD on every eligible node, following membership.

    Example: foundation start-replicated node-exporter --port 9100 -- /usr/bin/node_exporter
    """
    _start(
        "replicated", name, cmd, env, cwd, port, tag, check_http, check_tcp, restart, node_meta, no_wait, timeout, user
    )


@command(app, "stop", rich_help_panel=PANEL)
def stop(
    name: str = typer.Argument(..., help=_NAME_HELP, autocompletion=service_names),
    no_wait: bool = typer.Option(False, "--no-wait", help="Do not wait for the agents to stop it."),
    timeout: float = timeout_option(30.0, "How long to wait for the agents"),
) -> None:
    """Stop every instance of NAME and remove its spec, lock and status.

    Example: foundation stop cron
    """
    run = current()
    result = _manager().stop(name, wait=not no_wait, timeout=timeout)
    if run.settings.dry_run:
        return
    text = f"{name} stopped"
    if result["unconfirmed_nodes"]:
        text += f" (not confirmed by: {', '.join(result['unconfirmed_nodes'])})"
    run.out.result(result, text=text)


@command(app, "restart", rich_help_panel=PANEL)
def restart(
    name: str = typer.Argument(..., help=_NAME_HELP, autocompletion=service_names),
    no_wait: bool = _NO_WAIT,
    timeout: float = _TIMEOUT,
) -> None:
    """Restart every instance of NAME (a singleton stays on its node).

    Example: foundation restart cron
    """
    run = current()
    result = _manager().restart(name, wait=not no_wait, timeout=timeout)
    if run.settings.dry_run:
        return
    where = ", ".join(f"{i.node} (pid {i.pid})" for i in result.instances)
    run.out.result(result.to_dict(), text=f"{name} restarted (generation {result.spec.generation}) {where}".strip())


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


@command(app, "ps", rich_help_panel=PANEL)
def ps(name: Optional[str] = typer.Argument(None, help=_NAME_HELP, autocompletion=service_names)) -> None:
    """List placed services: node, pid, state, health, uptime, restarts, token.

    With --explain also the session and lock key behind each singleton.

    Example: foundation ps --json
    """
    run = current()
    rows = _manager().ps(name)
    if run.settings.json:
        run.out.json([r.to_dict() for r in rows])
        return
    if not rows:
        run.out.info("no services (start one with `foundation start-singleton NAME -- CMD`)")
        return
    columns = ["NAME", "MODE", "NODE", "PID", "STATE", "HEALTH", "UPTIME", "RESTARTS", "TOKEN"]
    if run.settings.explain:
        columns += ["LOCK KEY", "SESSION"]
    table = []
    for r in rows:
        row = [r.name, r.mode, r.node or "-", r.pid or "-", r.state, r.health or "-", _age(r.uptime()), r.restarts]
        row.append(r.fencing_token or "-")
        if run.settings.explain:
            row += [r.lock_key or "-", r.session or "-"]
        table.append(row)
    run.out.table(columns, table)
    _drained_footer(run)


def _drained_footer(run) -> None:
    """ps: say which nodes are drained (they run nothing until `foundation undrain`)."""
    from foundation_cli.facades.drain import Drainer

    drained = Drainer(run.consul()).drained()
    if drained:
        nodes = ", ".join(n + (f" ({m['reason']})" if m.get("reason") else "") for n, m in sorted(drained.items()))
        run.out.info(f"drained (runs nothing until `foundation undrain`): {nodes}")


@command(app, "logs", rich_help_panel=PANEL)
def logs(
    name: str = typer.Argument(..., help=_NAME_HELP, autocompletion=service_names),
    node: Optional[str] = typer.Option(None, "--node", help="Which node's instance.", autocompletion=node_names),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output."),
    lines: int = typer.Option(100, "--lines", "-n", help="How many lines from the end."),
) -> None:
    """Print an instance's output (stdout+stderr, as the agent logs it on its node).

    Reads the file directly when the instance runs on this machine's node,
    else over SSH (`tail`) with the cluster's SSH settings.

    Example: foundation logs cron --follow
    """
    from foundation_cli.facades import instance_logs as logs_facade

    run = current()
    manager = _manager()
    where, path = manager.log_location(name, node)
    from foundation_cli.raw.text import printable

    reader = logs_facade.reader_for(manager, where, path, name=name)
    run.out.info(f"# {name} on {where}: {path} ({reader.how})")
    try:
        for chunk in reader.tail(lines=lines, follow=follow):
            run.out.stdout.write(printable(chunk))  # escape sequences in the output are shown, not played
            run.out.stdout.flush()
    except KeyboardInterrupt:
        time.sleep(0)


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    for info in app.registered_commands:
        root.registered_commands.append(info)
