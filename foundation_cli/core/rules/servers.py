"""Server and Raft rules: server count, raft_multiplier, leader contact, autopilot dead-server cleanup."""

from __future__ import annotations

import json

from foundation_cli.core.rules.base import Change, Evidence, Recommendation, hcl, ms, rule

CONSENSUS = "https://developer.hashicorp.com/consul/docs/architecture/consensus"
PERFORMANCE = "https://developer.hashicorp.com/consul/docs/install/performance"
AUTOPILOT_API = "https://developer.hashicorp.com/consul/api-docs/v1.8.x/operator/autopilot"
AUTOPILOT = "https://developer.hashicorp.com/consul/tutorials/archive/autopilot-datacenter-operations"


@rule("servers.count")
def server_count(snap) -> list[Recommendation]:
    """1–2 servers tolerate no failure; even counts add none over one fewer; >5 voters slow every write."""
    voters = snap.servers.voters or snap.servers.count
    if voters == 0:
        return []
    single_machine = snap.cluster.mode == "local" or snap.agent.dev_mode
    evidence = [
        Evidence("raft voters", voters, "raft_configuration"),
        Evidence("failure tolerance (autopilot)", snap.servers.failure_tolerance, "autopilot_health"),
    ]
    add = Change(
        "add servers until the count is odd and at least 3: on each new server, then join it",
        config=hcl({"server": True, "bootstrap_expect": 3}),
        cli="consul join <an existing server address>",
    )
    if voters <= 2:
        return [
            Recommendation(
                id="servers.count",
                rule="servers.count",
                severity="info" if single_machine else "warning",
                title=f"{voters} server{'s' if voters > 1 else ''}: the cluster survives no server failure",
                reasoning=(
                    f"Raft needs a majority of voters ({voters // 2 + 1} of {voters}) to elect a leader and to commit "
                    "writes, so losing any server stops all writes (KV, sessions, service registration). "
                    "Consul's deployment table recommends 3 or 5 servers; 3 tolerate one failure."
                    + (" This is a one-machine (local/dev) cluster, so this is only a note." if single_machine else "")
                ),
                evidence=evidence,
                changes=[add],
                applies="restart",
                docs=[CONSENSUS],
            )
        ]
    if voters > 5:
        return [
            Recommendation(
                id="servers.count",
                rule="servers.count",
                severity="warning",
                title=f"{voters} voting servers: more than 5 slows every write without needed tolerance",
                reasoning=(
                    "Every write must reach a majority of voters; each voter beyond 5 adds replication work and "
                    "latency. Consul's deployment table tops out at 5 (tolerating 2 failures). Turn the extra "
                    "servers into clients (leave gracefully, restart with server = false)."
                ),
                evidence=evidence,
                changes=[
                    Change(
                        "on each extra server: leave, then restart it as a client",
                        config=hcl({"server": False}),
                        cli="consul leave   # on the server being demoted, then restart it with server = false",
                    )
                ],
                applies="rolling-restart",
                docs=[CONSENSUS],
            )
        ]
    if voters % 2 == 0:
        return [
            Recommendation(
                id="servers.count",
                rule="servers.count",
                severity="warning",
                title=f"{voters} servers: an even count tolerates no more failures than {voters - 1}",
                reasoning=(
                    f"Quorum of {voters} is {voters // 2 + 1}, so {voters} servers tolerate {(voters - 1) // 2} "
                    f"failure(s), the same as {voters - 1}, while every write waits for one more server. "
                    f"Add one server (to {voters + 1}) or demote one (to {voters - 1})."
                ),
                evidence=evidence,
                changes=[add],
                applies="restart",
                docs=[CONSENSUS],
            )
        ]
    return []


@rule("raft.multiplier")
def raft_multiplier(snap) -> list[Recommendation]:
    """performance.raft_multiplier > 1 on a production server slows leader-failure detection (restart)."""
    agent = snap.agent
    if not agent.server or agent.dev_mode or agent.raft_multiplier is None or agent.raft_multiplier <= 1.0:
        return []
    mult = agent.raft_multiplier
    return [
        Recommendation(
            id=f"raft.multiplier:{snap.cluster.agent_node}",
            rule="raft.multiplier",
            severity="warning",
            title=f"raft_multiplier {mult:g} on server {snap.cluster.agent_node}: leader failures detected {mult:g}x slower",
            reasoning=(
                f"The agent's Raft election timeout is {ms(agent.raft_election_timeout_ms)}, i.e. the 1 s base scaled "
                f"by raft_multiplier = {mult:g}. Consul's default of 5 is tuned for very small, burstable "
                "machines; its server performance guide recommends 1 for production, so a dead leader is "
                "replaced in seconds, not tens of seconds. Set it on every server and restart them one at a "
                "time (read from the agent you are connected to; check the other servers the same way)."
            ),
            evidence=[
                Evidence("ConsulRaftElectionTimeout", ms(agent.raft_election_timeout_ms), "agent_self"),
                Evidence("raft_multiplier (derived)", mult, "agent_self"),
            ],
            changes=[
                Change(
                    "on every server, then restart them one at a time (wait for `consul operator raft list-peers` "
                    "to show all voters between restarts)",
                    config=hcl({"performance": {"raft_multiplier": 1}}),
                    nodes=[s.name for s in snap.servers.servers],
                )
            ],
            applies="rolling-restart",
            docs=[PERFORMANCE],
        )
    ]


@rule("raft.last_contact")
def leader_contact(snap) -> list[Recommendation]:
    """A follower's last contact with the leader above autopilot's threshold: leadership is at risk of flapping."""
    threshold = snap.servers.last_contact_threshold_ms or 200.0
    worst = snap.servers.max_last_contact_ms  # alive followers only (autopilot health)
    # The leader's lastContact metric also counts dead followers: use it only without autopilot's view.
    metric = snap.runtime.leader_last_contact_mean_ms if worst is None and not snap.servers.dead else None
    observed = max(v for v in (worst, metric, 0.0) if v is not None)
    if observed <= threshold:
        return []
    slow = [
        s.name
        for s in snap.servers.servers
        if (s.last_contact_ms or 0) > threshold and not s.leader and s.serf_status in (None, "alive")
    ]
    evidence = [Evidence("autopilot LastContactThreshold", ms(threshold), "autopilot_configuration")]
    if worst is not None:
        evidence.append(Evidence("worst follower LastContact", ms(worst), "autopilot_health"))
    if metric is not None:
        evidence.append(Evidence("consul.raft.leader.lastContact mean", ms(metric), "agent_metrics"))
    return [
        Recommendation(
            id="raft.last_contact",
            rule="raft.last_contact",
            severity="warning",
            title=f"leader contact {ms(observed)} exceeds autopilot's {ms(threshold)}: leadership may flap",
            reasoning=(
                "Followers that do not hear from the leader within the election timeout start an election; "
                "autopilot already marks servers unhealthy past LastContactThreshold. Sustained high contact "
                "times usually mean an overloaded leader (CPU, disk fsync) or a slow network. Fix the cause "
                "first (server sizing); if the environment is inherently slow, raise raft_multiplier by one "
                "step so elections are not triggered by normal latency."
                + (f" Servers over the threshold: {', '.join(slow)}." if slow else "")
            ),
            evidence=evidence,
            changes=[
                Change(
                    "if the servers cannot be made faster: relax Raft timing on every server (rolling restart)",
                    config=hcl({"performance": {"raft_multiplier": int(max(1, snap.agent.raft_multiplier or 1)) + 1}}),
                    nodes=[s.name for s in snap.servers.servers],
                )
            ],
            applies="rolling-restart",
            docs=[PERFORMANCE, AUTOPILOT],
        )
    ]


@rule("autopilot.cleanup_dead_servers")
def cleanup_dead_servers(snap) -> list[Recommendation]:
    """Dead servers stay in the Raft configuration (counting against quorum) while cleanup is off (live)."""
    if snap.servers.cleanup_dead_servers is not False or not snap.servers.dead:
        return []
    body = {"CleanupDeadServers": True}
    # The endpoint replaces the whole configuration: send the current one with only this field changed.
    current = _autopilot_current(snap)
    if current:
        body = {**current, "CleanupDeadServers": True}
    params = [("cas", str(current.get("ModifyIndex")))] if current.get("ModifyIndex") is not None else []
    body.pop("CreateIndex", None)
    body.pop("ModifyIndex", None)
    return [
        Recommendation(
            id="autopilot.cleanup_dead_servers",
            rule="autopilot.cleanup_dead_servers",
            severity="warning",
            title=f"autopilot CleanupDeadServers is off while {len(snap.servers.dead)} server(s) are dead",
            reasoning=(
                f"Dead servers ({', '.join(snap.servers.dead)}) remain Raft voters, so they count toward the "
                "quorum size while contributing no votes: one more failure can cost the cluster its leader. "
                "With CleanupDeadServers on, autopilot removes dead servers from the Raft configuration "
                "(periodically and when a new server joins). This is a live change on the leader."
            ),
            evidence=[
                Evidence("CleanupDeadServers", False, "autopilot_configuration"),
                Evidence("dead servers", ", ".join(snap.servers.dead), "autopilot_health"),
            ],
            changes=[
                Change(
                    "turn on dead-server cleanup (whole autopilot configuration, check-and-set on its ModifyIndex)",
                    method="PUT",
                    path="/v1/operator/autopilot/configuration",
                    params=params,
                    body=json.dumps(body, separators=(",", ":")).encode(),
                    cli="consul operator autopilot set-config -cleanup-dead-servers=true",
                )
            ],
            applies="live",
            auto=True,
            docs=[AUTOPILOT_API, AUTOPILOT],
        )
    ]


def _autopilot_current(snap) -> dict:
    return dict(snap.servers.autopilot_config or {})
