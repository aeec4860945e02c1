"""`foundation advertise` / `discover-hosts`: mDNS on the LAN (issue 7)."""

from __future__ import annotations

from typing import Optional

import typer

from foundation_cli.commands.common import command, current, timeout_option

PANEL = "Discovery"
DEFAULT_TIMEOUT = 2.0  # discover-hosts listens at most this long without --timeout
SETTLE = 0.5  # ... and returns once no new machine answered for this long (RFC 6762: answers come in ~120 ms)

_IF_HELP = (
    "Interface name or local address to use (repeatable; 'all' = every interface). Env FOUNDATION_MDNS_INTERFACE."
)


def _advertise(
    interface: Optional[list[str]] = typer.Option(None, "--interface", "-i", help=_IF_HELP, show_default=False),
    ssh_port: int = typer.Option(22, "--ssh-port", min=1, max=65535, help="SSH port to announce."),
    once: bool = typer.Option(
        False, "--once", help="Announce, then exit without a goodbye (caches keep it for its TTL)."
    ),
    node: Optional[str] = typer.Option(None, "--node", help="Node name to announce (default: the hostname)."),
    role: str = typer.Option("none", "--role", help="server, client or none (not in a cluster yet)."),
    datacenter: str = typer.Option("", "--datacenter", help="Datacenter to announce (empty: none yet)."),
    cluster_id: str = typer.Option("", "--cluster-id", help="Cluster id to announce (empty: unclaimed)."),
    ipv4: bool = typer.Option(False, "--ipv4", help="Use IPv4 (the default; with --ipv6: both)."),
    ipv6: bool = typer.Option(False, "--ipv6", help="Use IPv6 (alone: IPv6 only)."),
) -> None:
    """Announce this machine on mDNS ("bootstrap me") until stopped.

    On Ctrl-C/SIGTERM it says goodbye (withdraws the record).

    A fresh box runs this so `foundation up` / `discover-hosts` on the LAN find it.

    Example: foundation advertise --interface eth0 --ssh-port 22
    """
    import signal
    import socket
    import threading

    from foundation_cli import __version__
    from foundation_cli.core import mdns_records
    from foundation_cli.errors import UsageError
    from foundation_cli.tools import mdns as mdns_tool

    run = current()
    binding = mdns_tool.resolve_binding(interface or mdns_tool.interfaces_from_env(), ipv4=ipv4, ipv6=ipv6)
    name = node or socket.gethostname().split(".")[0]
    ad = mdns_records.Advertisement(
        node=name, role=role, datacenter=datacenter, cluster_id=cluster_id, version=__version__, ssh_port=ssh_port
    )
    problems = mdns_records.check_advertisement(ad)
    if problems:
        raise UsageError(f"cannot announce this: {problems[0]}", hint="see foundation advertise --help")
    label = binding.addresses[0].split("%", 1)[0] if binding.addresses else "all"
    advertiser = mdns_tool.Advertiser(binding, instance=f"{name}@{label}", fields=ad.fields(), port=ssh_port)
    stop = threading.Event()
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        advertiser.start()
        data = {
            "instance": advertiser.instance,
            "interface": binding.label,
            "fields": ad.fields(),
            "announced": not advertiser.dry_run,
        }
        if run.settings.dry_run:
            return
        if run.settings.json:
            run.out.json(data)
        else:
            run.out.line(f"announcing {advertiser.instance} on {binding.label} (ssh port {ssh_port})")
        if once:
            advertiser.close(send_goodbye=False)
            return
        run.out.info("Ctrl-C or SIGTERM withdraws the announcement")
        stop.wait()
    finally:
        advertiser.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _discover_hosts(
    timeout: Optional[float] = timeout_option(
        None, "Listen this long, 0.1s to 60s (default: until the answers settle, at most 2s)", "-t"
    ),
    interface: Optional[list[str]] = typer.Option(None, "--interface", "-i", help=_IF_HELP, show_default=False),
    ipv4: bool = typer.Option(False, "--ipv4", help="Use IPv4 (the default; with --ipv6: both)."),
    ipv6: bool = typer.Option(False, "--ipv6", help="Use IPv6 (alone: IPv6 only)."),
    ssh: bool = typer.Option(False, "--ssh", help="Also list plain _ssh._tcp / _workstation._tcp hosts as candidates."),
    expect: Optional[int] = typer.Option(
        None, "--expect", min=1, help="Stop as soon as this many Foundation machines answered."
    ),
    waiting: bool = typer.Option(
        False, "--waiting", help="List what the cluster's node agents heard instead (foundation/discovered/)."
    ),
) -> None:
    """List machines answering on the LAN (mDNS) and whose cluster they are in.

    --waiting lists, without listening here, the machines the cluster's node
    agents heard that want to join (written under foundation/discovered/).

    Example: foundation discover-hosts --interface eth0 --timeout 2
    """
    from foundation_cli.core import strategies
    from foundation_cli.errors import UsageError
    from foundation_cli.tools import mdns as mdns_tool

    run = current()
    if waiting:
        return _waiting(run)
    binding = mdns_tool.resolve_binding(interface or mdns_tool.interfaces_from_env(), ipv4=ipv4, ipv6=ipv6)
    # No --timeout: return as soon as the answers are complete (nothing new for SETTLE s), at most 2 s.
    settle = SETTLE if timeout is None and expect is None else None
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    if not 0.1 <= timeout <= 60:
        raise UsageError(f"--timeout must be between 0.1s and 60s, got {timeout:g}s")
    hosts = strategies.mdns_hosts(
        binding, timeout=timeout, ssh=ssh, settings=run.settings, expect=expect, settle=settle
    )
    if run.settings.json:
        run.out.json([strategies.to_dict(h) for h in hosts])
        return
    if not hosts:
        run.out.info(f"nothing answered on {binding.label} within {timeout:g} s")
        return
    run.out.table(*strategies.hosts_table(hosts))


def _waiting(run) -> None:
    """``discover-hosts --waiting``: what the agents wrote under foundation/discovered/ (a KV read)."""
    import time

    from foundation_cli.core import strategies

    entries = sorted(strategies.read_discovered(run.consul()), key=lambda e: e["address"])
    if run.settings.json:
        run.out.json(entries)
        return
    if not entries:
        run.out.info("no machine is waiting to join (the node agents heard none on mDNS)")
        return
    now = time.time()
    rows = [
        (
            e["address"],
            e.get("node") or "-",
            e.get("status") or "-",
            e.get("datacenter") or "-",
            e.get("seen_by") or "-",
            f"{max(0, int(now - e['last_seen']))}s ago" if isinstance(e.get("last_seen"), (int, float)) else "-",
        )
        for e in entries
    ]
    run.out.table(("ADDRESS", "NAME", "STATUS", "DC", "HEARD BY", "LAST SEEN"), rows)


def mortal_hosts(cfg, *, yes: bool = False, interfaces: list[str] | None = None) -> list:
    """Mortal ``up``: discover, show what answered, ask before bootstrapping; the hosts to bootstrap.

    For the ``up`` command (issue 3): ``hosts = mdns.mortal_hosts(cfg, yes=yes)``;
    an empty list means "nothing to bootstrap: build the local one-node cluster".
    Only unclaimed, valid machines are returned (never another cluster's). The
    table goes to stderr so ``--json`` output stays clean; in a dry run nothing
    is asked (nothing is changed). Without ``--yes``, a closed or non-terminal
    stdin is a refusal (one-line error), never a silent yes.
    """

    from foundation_cli.core import strategies

    run = current()
    notes: list[str] = []
    found = strategies.discover(cfg, run.settings, interfaces=interfaces, notes=notes)
    for note in notes:
        run.out.info(note)
    hosts = strategies.claimable(found)
    if found and not run.settings.quiet:
        columns, rows = strategies.hosts_table(found)
        run.out.info(f"found {len(found)} machine(s) ({len(hosts)} to bootstrap):")
        _table_to_stderr(run, columns, rows)
    skipped = len(found) - len(hosts)
    if skipped:
        run.out.info(f"leaving {skipped} machine(s) alone (other cluster, invalid, already a member or not Foundation)")
    if not hosts or yes or run.settings.dry_run:
        return hosts
    run.out.confirm(
        f"bootstrap these {len(hosts)} machine(s) over SSH?",
        no_answer=f"found {len(hosts)} machine(s) to bootstrap but got no confirmation (stdin is not a terminal)",
        no_answer_hint="re-run with --yes, or list the hosts in foundation.yaml",
        declined="not bootstrapped: the answer was not yes",
    )
    return hosts


def _table_to_stderr(run, columns, rows) -> None:
    from rich.table import Table

    from foundation_cli.raw.secrets import mask

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(mask(str(cell)) for cell in row))
    run.out.console(err=True).print(table)


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    command(root, "advertise", rich_help_panel=PANEL)(_advertise)
    command(root, "discover-hosts", rich_help_panel=PANEL)(_discover_hosts)
