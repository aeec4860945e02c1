"""Membership rules: members stuck in the failed state, version skew."""

from __future__ import annotations

from foundation_cli.core.rules.base import Change, Evidence, Recommendation, rule

FORCE_LEAVE = "https://developer.hashicorp.com/consul/commands/force-leave"
UPGRADES = "https://developer.hashicorp.com/consul/docs/upgrading/instructions/general-process"


@rule("members.failed")
def failed_members(snap) -> list[Recommendation]:
    """Each failed member: force-leave (live) so gossip stops reconnecting and a dead server leaves Raft."""
    out = []
    by_name = {m.name: m for m in snap.members.members}
    for name in snap.members.failed:
        member = by_name.get(name)
        role = member.role if member else "client"
        out.append(
            Recommendation(
                id=f"members.failed:{name}",
                rule="members.failed",
                severity="warning",
                title=f"member {name} ({role}) is failed: force-leave it if it is gone for good",
                reasoning=(
                    f"{name} stopped answering gossip probes without leaving gracefully. Consul keeps trying to "
                    "reconnect to failed members and only reaps them after reconnect_timeout (72 h by default); "
                    "meanwhile its services stay in the catalog as critical"
                    + (", and as a server it still counts toward the Raft quorum" if role == "server" else "")
                    + ". force-leave moves it to 'left' now. Only do this for a node that is really gone: "
                    "if its agent comes back it simply rejoins."
                ),
                evidence=[
                    Evidence(f"member {name} status", "failed", "members"),
                    Evidence("members by state", snap.members.by_state, "members"),
                ],
                changes=[
                    Change(
                        f"force {name} into the left state",
                        method="PUT",
                        path=f"/v1/agent/force-leave/{name}",
                        cli=f"consul force-leave {name}",
                    )
                ],
                applies="live",
                auto=True,
                docs=[FORCE_LEAVE],
            )
        )
    return out


def _version_key(version: str) -> tuple:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@rule("members.version_skew")
def version_skew(snap) -> list[Recommendation]:
    """More than one Consul version among alive members: finish the rolling upgrade."""
    versions = {v: n for v, n in snap.members.versions.items() if v != "unknown"}
    if len(versions) < 2:
        return []
    ordered = sorted(versions, key=_version_key)
    newest = ordered[-1]
    older = [m.name for m in snap.members.members if m.status == "alive" and m.version and m.version != newest]
    minor_skew = len({_version_key(v)[:2] for v in versions}) > 1
    servers_old = [m.name for m in snap.members.members if m.role == "server" and m.version and m.version != newest]
    return [
        Recommendation(
            id="members.version_skew",
            rule="members.version_skew",
            severity="warning" if minor_skew or servers_old else "info",
            title=f"{len(versions)} Consul versions in the cluster ({', '.join(ordered)})",
            reasoning=(
                "Consul supports mixed versions only during a rolling upgrade; features and Raft/serf protocol "
                "behaviour follow the oldest member. Upgrade servers first (one at a time, followers before the "
                f"leader), then clients, until everything runs {newest}."
                + (f" Older: {', '.join(older[:10])}{' …' if len(older) > 10 else ''}." if older else "")
            ),
            evidence=[Evidence("alive members by version", versions, "members")],
            changes=[
                Change(
                    f"upgrade the consul binary to {newest} on each older node and restart its agent, one at a time",
                    nodes=older,
                    cli="consul leave && <install consul " + newest + "> && <start the agent>",
                )
            ],
            applies="rolling-restart",
            docs=[UPGRADES],
        )
    ]
