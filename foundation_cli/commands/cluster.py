"""`foundation up` / `down` / `consul` / `ssh`: bring the cluster up and drop a layer (issue 3)."""

from __future__ import annotations

from typing import Any, Optional

import typer
from typer.core import TyperCommand

from foundation_cli.commands.common import command, current

PANEL = "Cluster"


def _up(
    local: bool = typer.Option(False, "--local", help="A one-node cluster on this machine (no discovery, no SSH)."),
    http_port: Optional[int] = typer.Option(None, "--http-port", help="Local cluster's Consul HTTP port (8500)."),
    consul_binary: Optional[str] = typer.Option(
        None, "--consul-binary", help="Local consul binary (uploaded to hosts without one). Default: consul on PATH."
    ),
    accept_new_host_keys: bool = typer.Option(
        False, "--accept-new-host-keys", help="Add unknown SSH host keys to known_hosts (changed keys still stop)."
    ),
    only: Optional[list[str]] = typer.Option(None, "--host", help="Only these hosts (repeatable)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Mortal mode: bootstrap what discovery finds without asking."),
    interface: Optional[list[str]] = typer.Option(
        None, "--interface", help="Mortal mode: discover (mDNS) on this interface only (repeatable)."
    ),
    parallel: int = typer.Option(10, "--parallel", min=1, help="Work on at most N hosts at once (SSH sessions)."),
) -> None:
    """Bring the cluster up: Consul and the node agent on every host (idempotent).

    Hosts come from foundation.yaml; with none (mortal mode) and with --local,
    a one-node cluster runs on this machine. Re-running changes only what differs.

    Example: foundation up --local
    """
    from foundation_cli.core import cluster_config

    run = current()
    cfg = cluster_config.load(run.settings.config_path)
    join: list[str] = []
    if local:  # never discovery: no multicast on this machine's interfaces
        return _up_local(cfg, http_port=http_port, consul_binary=consul_binary)
    if not cfg.hosts or cfg.strategy != "static":
        if cfg.strategy == "mdns":
            from foundation_cli.commands import mdns

            hosts = mdns.mortal_hosts(cfg, yes=yes, interfaces=interface)
        else:
            from foundation_cli.core import strategies

            hosts = strategies.find_hosts(cfg, run.settings)
        if not hosts:
            if cfg.hosts:
                from foundation_cli.errors import NotFoundError

                raise NotFoundError(f"cluster.strategy {cfg.strategy} found no hosts")
            run.out.info("no hosts configured or discovered: bringing up the local one-node cluster")
            return _up_local(cfg, http_port=http_port, consul_binary=consul_binary)
        join = [h.address for h in hosts if h.extra.get("join_only")]  # an existing cluster's servers: join only
        cfg.hosts = [
            cluster_config.HostConfig(address=h.address, user=h.user, port=h.port if h.port != 22 else None)
            for h in hosts
            if not h.extra.get("join_only")
        ]
        if not cfg.hosts:
            from foundation_cli.errors import NotFoundError

            raise NotFoundError("nothing to bootstrap: the strategy found only an existing cluster's servers")
    from foundation_cli.commands import cluster_render

    cluster_render.up_remote(
        cfg, consul_binary=consul_binary, accept_new=accept_new_host_keys, only=only, join=join, parallel=parallel
    )


def _up_local(cfg, *, http_port: int | None, consul_binary: str | None) -> None:
    from foundation_cli.core import local_cluster

    run = current()
    port = http_port or (cfg.ports.get("http") if cfg.mode == "wizard" else None) or local_cluster.DEFAULT_HTTP_PORT
    run.settings.consul_addr = f"http://127.0.0.1:{port}"
    result = local_cluster.up(
        http_port=port,
        datacenter=cfg.datacenter,
        consul_binary=consul_binary or cfg.consul_binary,
        consul_extra=cfg.consul,
        progress=lambda msg: run.out.info(f"local: {msg}"),
        token=run.settings.token,
    )
    for warning in result.warnings:
        run.out.warn(warning)
    if run.settings.json:
        run.out.json(result.to_dict())
        return
    rows = [(name, state) for name, state in result.components.items()]
    run.out.table(("COMPONENT", "STATE"), rows)
    verdict = "changed" if result.changed else "unchanged"
    run.out.line(f"local cluster {result.cluster_id} at {result.http_addr}: {verdict} (data: {result.data_dir})")


def _down(
    local: bool = typer.Option(False, "--local", help="Stop the local one-node cluster."),
    purge: bool = typer.Option(False, "--purge", help="Also delete Consul data (and the local data dir)."),
    only: Optional[list[str]] = typer.Option(None, "--host", help="Only these hosts (repeatable)."),
) -> None:
    """Stop Consul and the node agent (consul leave); data kept unless --purge.

    Example: foundation down --local --purge
    """
    run = current()
    from foundation_cli.core import cluster_state

    state = cluster_state.load() or {}
    if not local and state.get("mode") != "ssh":
        from foundation_cli.core import cluster_config

        local = not cluster_config.load(run.settings.config_path).hosts
    if local:
        from foundation_cli.core import local_cluster

        result = local_cluster.down(purge=purge, progress=lambda msg: run.out.info(f"local: {msg}"))
        if run.settings.json:
            run.out.json(result.to_dict())
            return
        run.out.table(("COMPONENT", "STATE"), list(result.components.items()))
        return
    from foundation_cli.commands import cluster_render

    cluster_render.down_remote(purge=purge, only=only)


class PassThroughCommand(TyperCommand):
    """A command whose arguments all go to the wrapped tool untouched: Foundation parses none of them.

    Foundation's own (global) options go before the command name, where the root parses them:
    ``foundation --explain consul kv get -recurse app``. Everything after the name reaches the
    tool verbatim (``-recurse``, ``-cas``, ``-http-addr=…``, ``--help`` …); a single leading
    ``--`` is dropped, so the old spelling ``foundation consul -- members`` still works.

    ``own_help_first``: a first argument ``-h``/``--help`` shows Foundation's help (for ``ssh``,
    whose first argument is a node, never an option); otherwise ``--help`` is the tool's, and the
    command alone (no arguments) shows Foundation's help.
    """

    own_help_first = False

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        if not args and not self.own_help_first and not ctx.resilient_parsing:
            typer.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        if self.own_help_first and args[:1] and args[0] in ("-h", "--help"):
            return super().parse_args(ctx, args[:1])
        if args[:1] == ["--"]:
            args = args[1:]
        return super().parse_args(ctx, ["--", *args])


class PassThroughAfterNode(PassThroughCommand):
    own_help_first = True


PASS_THROUGH_EPILOG = (
    "Everything after the command name goes to the tool untouched (its own --help included); "
    "Foundation's global options go before it: foundation --explain {name} …"
)


def _consul(
    args: Optional[list[str]] = typer.Argument(
        None, metavar="CONSUL_ARGS", help="Passed to consul verbatim, options included."
    ),
) -> None:
    """Run the real consul CLI against this cluster (address and token set for you).

    Example: foundation consul kv get -recurse app/
    """
    import os
    import shutil

    from foundation_cli.errors import UsageError

    run = current()
    argv_tail = list(args or [])
    binary = shutil.which("consul")
    if not binary:
        raise UsageError("consul CLI not found on PATH", hint="install Consul (scripts/install-consul.sh)")
    env = dict(os.environ)
    env["CONSUL_HTTP_ADDR"] = run.settings.consul_addr or ""
    if run.settings.token:
        env["CONSUL_HTTP_TOKEN"] = run.settings.token
    if run.settings.cacert:
        env["CONSUL_CACERT"] = run.settings.cacert  # the cluster CA `up` made (TLS on by default)
    from foundation_cli.raw.operation import RawOperation

    op = RawOperation(kind="local-process", argv=["consul", *argv_tail])
    op.finish(summary=f"CONSUL_HTTP_ADDR={run.settings.consul_addr}")
    run.recorder.add(op)
    if run.settings.dry_run:
        return
    import subprocess
    import sys

    sys.stdout.flush()
    code = subprocess.call([binary, *argv_tail], env=env)
    if code:
        raise typer.Exit(code if code > 0 else 128 - code)


def _ssh(
    node: str = typer.Argument(..., help="Node name or address from the cluster."),
    cmd: Optional[list[str]] = typer.Argument(
        None, metavar="ARGS", help="Passed to ssh verbatim after the node (default: interactive shell)."
    ),
) -> None:
    """Open SSH to a node with the cluster's SSH settings.

    Example: foundation ssh node-1 uptime
    """
    from foundation_cli.commands import cluster_render

    cluster_render.ssh_node(node, cmd or [])


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    command(root, "up", rich_help_panel=PANEL)(_up)
    command(root, "down", rich_help_panel=PANEL)(_down)
    # Pass-through: nothing after the command name is parsed by Foundation (PassThroughCommand).
    verbatim = {"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
    for name, func, cls in (("consul", _consul, PassThroughCommand), ("ssh", _ssh, PassThroughAfterNode)):
        command(
            root,
            name,
            cls=cls,
            rich_help_panel=PANEL,
            context_settings=verbatim,
            options_metavar="",
            add_help_option=cls.own_help_first,  # consul's --help is consul's
            epilog=PASS_THROUGH_EPILOG.format(name=name),
        )(func)
