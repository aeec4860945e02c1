"""Rolling restart / upgrade: the order, the checks, and the shell each node runs (docs/day2.md).

Order: the Raft followers first (one at a time), the leader last among the
servers (one leader election, at the end), then the clients. Before a node
restarts its singletons are handed over (a drain); after it the driver waits
until the node is an alive member again and, for a server, until autopilot
says the cluster is healthy with its failure tolerance back where it was.
A cluster with failure tolerance 0 (one server, or one already down) is
refused unless forced: restarting a server there stops the cluster.

Consul is restarted by its service: the ``foundation-consul`` systemd unit,
or the supervised loop ``foundation up`` starts (its pid file names the loop;
killing the consul child makes the loop start it again a second later, with
the same command line). A new binary replaces the one the running Consul was
started from, atomically (a rename: the running process keeps its old inode).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from foundation_cli.errors import ConflictError, FoundationError

RUN_DIR = "/run/foundation"


@dataclass
class UpgradeStep:
    node: str
    address: str | None
    role: str  # follower | leader | client
    actions: list[str] = field(default_factory=list)
    result: str = "pending"  # pending | done | failed | skipped
    detail: str = ""
    seconds: float = 0.0
    started: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class RaftLeader(NamedTuple):
    node: str | None  # its Consul node name
    host: str  # its server RPC address without the port


def raft_leader(raft: dict) -> RaftLeader | None:
    """The leader in ``/v1/operator/raft/configuration``'s answer, or None (no leader now)."""
    entry = next((s for s in raft.get("Servers") or [] if s.get("Leader")), None)
    if entry is None:
        return None
    return RaftLeader(node=entry.get("Node"), host=(entry.get("Address") or "").rsplit(":", 1)[0])


def plan_order(raft: dict, catalog_nodes: list[dict]) -> list[UpgradeStep]:
    """Followers (by name), then the leader, then every other catalog node (clients)."""
    servers = raft.get("Servers") or []
    found = raft_leader(raft)
    leader = found.node if found else None
    addresses: dict[str, str | None] = {n["Node"]: n.get("Address") for n in catalog_nodes if n.get("Node")}
    followers = sorted(n for s in servers if (n := s.get("Node")) and n != leader)
    server_names = {s.get("Node") for s in servers}
    steps = [UpgradeStep(n, addresses.get(n), "follower") for n in followers]
    if leader:
        steps.append(UpgradeStep(leader, addresses.get(leader), "leader"))
    steps += [UpgradeStep(n, addresses.get(n), "client") for n in sorted(addresses) if n not in server_names]
    return steps


def check_tolerance(health: dict, *, force: bool) -> int:
    """The current failure tolerance; refuses (exit 6) at 0 or when unhealthy, unless ``force``."""
    tolerance = int(health.get("FailureTolerance") or 0)
    healthy = bool(health.get("Healthy"))
    if force:
        return tolerance
    if not healthy:
        raise ConflictError(
            "autopilot says the cluster is not healthy: a rolling restart now could lose quorum",
            hint="`foundation status` shows which server; fix it first, or --force",
        )
    if tolerance < 1:
        raise ConflictError(
            "failure tolerance is 0: restarting any server would stop the cluster",
            hint="add servers (3 or 5) first, or --force to accept the outage",
        )
    return tolerance


def recovered(health: dict, *, tolerance_before: int) -> bool:
    """Autopilot healthy again, with the failure tolerance it had before the restart."""
    return bool(health.get("Healthy")) and int(health.get("FailureTolerance") or 0) >= tolerance_before


def wait_recovered(client, node: str, *, server: bool, tolerance: int, timeout: float, interval: float = 0.5) -> None:
    """After ``node``'s Consul restarted: wait until it is an alive member again and, for a server,
    until autopilot is healthy with the failure tolerance it had before (:func:`recovered`).

    ``client`` must reach a server other than the one restarting (errors while it answers are
    retried until ``timeout``); raises :class:`FoundationError` naming what was last seen.
    """
    deadline = time.monotonic() + timeout
    last = "not checked"
    while True:
        try:
            members = {m.get("Name"): m.get("Status") for m in client.agent.members()}
            if members.get(node) != 1:
                last = f"member status {members.get(node)}"
            elif server:
                health = client.operator.autopilot_health()
                if recovered(health, tolerance_before=tolerance):
                    return
                last = (
                    f"autopilot healthy={health.get('Healthy')} failure tolerance "
                    f"{health.get('FailureTolerance')} (want {tolerance})"
                )
            else:
                return
        except FoundationError as exc:  # the server we talk to may be the one restarting
            last = exc.message
        if time.monotonic() >= deadline:
            raise FoundationError(f"{node} not healthy within {timeout:.0f}s after its restart: {last}")
        time.sleep(interval)


# The pid of the running consul: the systemd unit's main pid, or the consul in the supervised loop's group.
CONSUL_PID = (
    "if systemctl is-active -q foundation-consul 2>/dev/null; then "
    "systemctl show -p MainPID --value foundation-consul; "
    f'elif [ -s {RUN_DIR}/consul.pid ]; then pgrep -g "$(cat {RUN_DIR}/consul.pid)" -x consul | head -n1; fi'
)
CONSUL_EXE = f'p=$({CONSUL_PID}); [ -n "$p" ] && readlink -f "/proc/$p/exe"'
RESTART_CONSUL = (
    "if systemctl is-active -q foundation-consul 2>/dev/null; then systemctl restart foundation-consul; "
    f'else p=$({CONSUL_PID}); [ -n "$p" ] || {{ echo "no foundation-consul service or loop" >&2; exit 3; }}; '
    'kill -TERM "$p"; fi'
)
AGENT_PID = (
    "if systemctl is-active -q foundation-agent 2>/dev/null; then "
    "systemctl show -p MainPID --value foundation-agent; "
    f'elif [ -s {RUN_DIR}/agent.pid ]; then pgrep -g "$(cat {RUN_DIR}/agent.pid)" -f foundation_cli | '
    f'grep -vx "$(cat {RUN_DIR}/agent.pid)" | head -n1; fi'
)
RESTART_AGENT = (
    "if systemctl is-active -q foundation-agent 2>/dev/null; then systemctl restart foundation-agent; "
    f'else p=$({AGENT_PID}); [ -n "$p" ] || {{ echo "no foundation-agent service or loop" >&2; exit 3; }}; '
    'kill -TERM "$p"; fi'
)
