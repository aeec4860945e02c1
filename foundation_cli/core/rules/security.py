"""Security rules: gossip encryption off, ACLs off."""

from __future__ import annotations

from foundation_cli.core.rules.base import Change, Evidence, Recommendation, hcl, loopback_only, rule

GOSSIP_ENCRYPTION = "https://developer.hashicorp.com/consul/docs/security/encryption"
GOSSIP_EXISTING = "https://developer.hashicorp.com/consul/tutorials/security/gossip-encryption-secure"
ACL = "https://developer.hashicorp.com/consul/docs/security/acl"
ACL_BOOTSTRAP = "https://developer.hashicorp.com/consul/tutorials/security/access-control-setup-production"


@rule("security.gossip_encryption")
def gossip_encryption(snap) -> list[Recommendation]:
    if snap.agent.gossip_encrypted is not False:
        return []
    local = loopback_only(snap)
    return [
        Recommendation(
            id="security.gossip_encryption",
            rule="security.gossip_encryption",
            severity="info" if local else "warning",
            title="gossip encryption is off: anyone on the network can join or spoof members",
            reasoning=(
                "The agent reports serf_lan encrypted = false. Without a gossip key any host that can reach the "
                "serf port can join the cluster, fire events and read membership. Consul's procedure for an "
                "existing cluster: generate a key, roll it out with encrypt_verify_incoming/outgoing = false, "
                "then switch verification on (two rolling restarts)."
                + (" All members gossip on loopback here, so this is only a note." if local else "")
            ),
            evidence=[Evidence("Stats.serf_lan.encrypted", False, "agent_self")],
            changes=[
                Change(
                    "1) make one key (GOSSIP_KEY=$(consul keygen)), put it in every agent's config with verification "
                    "off, then restart the agents one at a time",
                    config="encrypt = $GOSSIP_KEY   # the same quoted key on every agent\n"
                    + hcl({"encrypt_verify_incoming": False, "encrypt_verify_outgoing": False}),
                    cli="consul keygen",
                ),
                Change(
                    "2) then set both verify flags to true on every agent and restart them again, one at a time",
                    config=hcl({"encrypt_verify_incoming": True, "encrypt_verify_outgoing": True}),
                ),
            ],
            applies="rolling-restart",
            docs=[GOSSIP_ENCRYPTION, GOSSIP_EXISTING],
        )
    ]


@rule("security.acls")
def acls(snap) -> list[Recommendation]:
    servers = [m for m in snap.members.members if m.role == "server" and m.status == "alive"]
    tags = [m.acls for m in servers if m.acls is not None]
    if tags:
        off = all(t == "0" for t in tags)
    else:
        off = snap.agent.acls_enabled is False
    if not off:
        return []
    local = loopback_only(snap)
    wide_open = snap.agent.gossip_encrypted is False
    return [
        Recommendation(
            id="security.acls",
            rule="security.acls",
            severity="warning" if (wide_open and not local) else "info",
            title="ACLs are off: anyone who reaches the HTTP API can write KV, services and sessions",
            reasoning=(
                "The servers' gossip tags say acls = 0 (disabled). Every request to an agent's HTTP API is then "
                "allowed, including deleting KV, deregistering services and force-leaving nodes. Consul's "
                "production guidance is ACLs with default_policy = deny and tokens per agent and service."
                + (
                    " Gossip is encrypted and Foundation's default (mortal mode) leaves ACLs to the operator, so "
                    "this is a note; enable them with `acl: {enabled: true}` in foundation.yaml."
                    if not wide_open
                    else ""
                )
                + (" All members are on loopback here." if local else "")
            ),
            evidence=[Evidence("servers' acls tag", sorted(set(tags)) or ["n/a"], "members")]
            + (
                [Evidence("ACLsEnabled", snap.agent.acls_enabled, "agent_self")]
                if snap.agent.acls_enabled is not None
                else []
            ),
            changes=[
                Change(
                    "on every agent, rolling restart (servers first), then bootstrap the first token",
                    config=hcl({"acl": {"enabled": True, "default_policy": "deny", "enable_token_persistence": True}}),
                    cli="consul acl bootstrap",
                )
            ],
            applies="rolling-restart",
            docs=[ACL, ACL_BOOTSTRAP],
        )
    ]
