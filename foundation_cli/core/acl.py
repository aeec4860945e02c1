"""Consul ACLs, on by default: bootstrap, the node agent's policy, one token per node.

Who holds what (docs/security.md draws the whole trust model):

- the **management token** comes from ``PUT /v1/acl/bootstrap`` and lives only on the
  operator's machine (the state file, mode 0600); no host ever sees it;
- each node's **Consul agent token** has the node's identity only (``NodeIdentities``:
  write its own node, read services) and sits in that node's Consul config (0640 root);
- each node's **Foundation agent token** has the policy ``foundation-agent-<node>``
  (:func:`agent_rules`): read everything under ``foundation/``, write only the keys an agent
  writes (locks, status, config-status/<node>, channels, optimizer/last, discovered), sessions
  (any node's: to destroy a dead holder's), the agent endpoints of its own node, services
  registered on its node, events. It cannot write ``foundation/services/`` (a spec there runs
  a command on every node) nor ``foundation/config/``, ``foundation/kv/`` or
  ``foundation/cluster``; it sits in a 0600 file;
- the **snapshot token** (policy ``foundation-snapshot``, :func:`snapshot_rules`) lets the node
  agent on a *server* take the scheduled snapshots. Consul 1.8 allows ``GET /v1/snapshot`` only
  to ``acl = "write"`` (its docs say "management"): that is management-equivalent power (it can
  mint any token), so it goes to server hosts only, whose root can already read every token in
  the Raft data (``raft.db``, Consul's own snapshots); never to a client (docs/security.md).

Node tokens are made with a SecretID chosen here (``PUT /v1/acl/token`` accepts one), so a
host's config can carry its token before the ACL system is even bootstrapped: ``up`` writes
configs, starts every agent, then bootstraps and creates the tokens the agents already use.
Every call goes through the recording Consul client (literal API paths below), so
``--explain`` shows them; the tokens themselves are registered with the masker.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundation_cli.core import keys
from foundation_cli.errors import FoundationError, PermissionDeniedError, UnreachableError, UsageError
from foundation_cli.raw import secrets

if TYPE_CHECKING:
    from foundation_cli.core.cluster_config import ClusterConfig

AGENT_POLICY_PREFIX = "foundation-agent-"
SNAPSHOT_POLICY = "foundation-snapshot"
"""The policy of the snapshot token the node agents on servers use for ``GET /v1/snapshot`` only."""
"""Name prefix of the per-node policy of the Foundation node agent."""

BOOTSTRAP_RESET_FILE = "acl-bootstrap-reset"
"""In a Consul server's data dir: holding the reset index re-allows ``/v1/acl/bootstrap`` once."""


def new_secret() -> str:
    """A fresh token SecretID (a random UUID, as Consul makes them)."""
    token = str(uuid.uuid4())
    secrets.register(token)
    return token


def config_block(*, default_policy: str = "deny", agent_token: str | None = None) -> dict[str, Any]:
    """The ``acl`` stanza of an agent config: on, deny by default, tokens set by API persisted."""
    block: dict[str, Any] = {"enabled": True, "default_policy": default_policy, "enable_token_persistence": True}
    if agent_token:
        block["tokens"] = {"agent": agent_token}
    return block


def agent_rules(node: str) -> str:
    """The Foundation node agent's policy for ``node`` (HCL): exactly what an agent does."""
    p = keys.PREFIX
    lines = [
        f'key_prefix "{p}/" {{ policy = "read" }}',
        f'key_prefix "{keys.LOCKS}" {{ policy = "write" }}',
        f'key_prefix "{keys.STATUS}" {{ policy = "write" }}',
        f'key_prefix "{keys.CONFIG_STATUS}{node}" {{ policy = "write" }}',
        f'key_prefix "{keys.AGENTS}{node}" {{ policy = "write" }}',
        f'key_prefix "{keys.CHANNELS}" {{ policy = "write" }}',
        f'key_prefix "{keys.DISCOVERED}" {{ policy = "write" }}',
        f'key "{keys.OPTIMIZER_LAST}" {{ policy = "write" }}',
        # Any node's sessions: an agent that sees a holder's node dead destroys its session so the
        # singleton moves in seconds, not when the servers get round to it (agent/placement.py
        # _watch_holders). A wrong or hostile destroy costs a handover, never an overlap: the
        # holder fences itself before lock-delay lets anyone acquire (core/timing.py).
        'session_prefix "" { policy = "write" }',
        f'node "{node}" {{ policy = "write" }}',
        'node_prefix "" { policy = "read" }',
        f'agent "{node}" {{ policy = "write" }}',  # its own agent only: maintenance mode, leave on `down`
        'service_prefix "" { policy = "write" }',
        f'event_prefix "{keys.EVENT_PREFIX}" {{ policy = "write" }}',
        'event_prefix "" { policy = "read" }',
        'operator = "read"',
    ]
    return "\n".join(lines) + "\n"


def snapshot_rules() -> str:
    """The snapshot token's policy (HCL). Consul 1.8 checks ``acl = "write"`` for ``/v1/snapshot``
    (``operator = "write"`` or ``acl = "read"`` get 403, checked against 1.8.7): there is nothing narrower.
    Plus the snapshot index, which only this token (and the operator) may write."""
    return f'acl = "write"\nkey_prefix "{keys.SNAPSHOTS}" {{ policy = "write" }}\n'


def snapshot_token(state: dict | None) -> str:
    """The snapshot token kept in the state file, else a new one."""
    token = (state or {}).get("snapshot_token")
    if isinstance(token, str) and token:
        secrets.register(token)
        return token
    return new_secret()


@dataclass
class NodeTokens:
    """The two tokens one node holds (SecretIDs; the AccessorIDs are Consul's)."""

    consul: str
    agent: str

    def to_dict(self) -> dict[str, str]:
        return {"consul": self.consul, "agent": self.agent}

    @classmethod
    def from_state(cls, data: Any) -> NodeTokens | None:
        if isinstance(data, dict) and isinstance(data.get("consul"), str) and isinstance(data.get("agent"), str):
            tokens = cls(consul=data["consul"], agent=data["agent"])
            secrets.register(tokens.consul)
            secrets.register(tokens.agent)
            return tokens
        return None


def node_tokens(previous: dict | None, node: str) -> NodeTokens:
    """The node's tokens kept in the state file, else new ones."""
    return NodeTokens.from_state((previous or {}).get(node)) or NodeTokens(consul=new_secret(), agent=new_secret())


# ---------------------------------------------------------------------------------------------
# HTTP: the gateway's typed ACL methods (foundation_cli/tools/consul/acl.py), answers kept whole


def _text(reply) -> str:
    body = reply.body
    if body is None:
        return ""
    return body if isinstance(body, str) else json.dumps(body)


def _json(reply) -> dict:
    return reply.body if isinstance(reply.body, dict) else {}


def token_valid(client, token: str) -> bool:
    """``GET /v1/acl/token/self`` with ``token``: whether Consul knows it."""
    return client.acl.token_self(token).status == 200


class BootstrapRefused(FoundationError):
    """The cluster's ACLs were bootstrapped before and we do not hold a valid management token."""

    exit_status = PermissionDeniedError.exit_status

    def __init__(self, message: str, *, reset_index: str | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reset_index = reset_index


def bootstrap(
    client, *, known: str | None, dry_run: bool = False, fresh: bool = False, timeout: float = 30.0
) -> tuple[str, bool]:
    """The management token: ``known`` when Consul accepts it, else ``PUT /v1/acl/bootstrap``.

    Returns ``(token, made_now)``. Rides through the first seconds of a new cluster (no leader,
    "legacy mode" while the leader sets ACLs up). Raises :class:`BootstrapRefused` when the
    cluster was bootstrapped by someone else (their token is needed, or a reset).
    """
    deadline = time.monotonic() + timeout
    if fresh:
        known = None
    while True:
        try:
            return _bootstrap_once(client, known, dry_run)
        except _NotYet as exc:
            known, status, text = exc.known, exc.status, exc.text
        if dry_run:  # one look only: a dry run does not wait for a cluster to settle
            return known or "${CONSUL_HTTP_TOKEN}", not known
        if time.monotonic() > deadline:
            raise UnreachableError(
                f"ACL bootstrap did not answer after {timeout:.0f} s: {status} {text.strip()[:120]}",
                hint="the servers may still be electing a leader; run `foundation up` again",
            )
        time.sleep(0.1)  # API not listening yet / no leader yet / ACLs still in legacy mode


class _NotYet(Exception):
    """The cluster cannot answer the bootstrap yet: what it said, and the token still worth trying."""

    def __init__(self, known: str | None, status: int, text: str) -> None:
        super().__init__(text)
        self.known, self.status, self.text = known, status, text


def _bootstrap_once(client, known: str | None, dry_run: bool) -> tuple[str, bool]:
    """One try of :func:`bootstrap`; :class:`_NotYet` when the servers cannot answer yet."""
    status, text = 0, ""
    try:
        if known:
            reply = client.acl.token_self(known)
            status, text = reply.status, _text(reply)
            if status == 200 or dry_run:
                return known, False
            if status == 403 and "ACL not found" in text:
                known = None  # a token of an older cluster: bootstrap below
        if not known:
            reply = client.acl.bootstrap()
            status, text = reply.status, _text(reply)
            if dry_run:
                return "${CONSUL_HTTP_TOKEN}", True
            if status == 200:
                token = _json(reply).get("SecretID")
                if token:
                    secrets.register(token)
                    return token, True
            if status == 403 and "no longer allowed" in text:
                index = text.rsplit("reset index:", 1)[-1].strip(" )\n") if "reset index" in text else None
                raise BootstrapRefused(
                    "the cluster's ACLs were bootstrapped before and the management token is not in the state file",
                    reset_index=index,
                    hint="pass it with --token / CONSUL_HTTP_TOKEN (or acl.token_file), or reset: write "
                    f"{index or 'the reset index'} into <data_dir>/{BOOTSTRAP_RESET_FILE} on the leader and run "
                    "up again",
                )
    except UnreachableError as exc:  # a server just started: its API is not listening yet
        status, text = 0, exc.message
    raise _NotYet(known, status, text)


def _ensure_policy(client, mgmt: str, name: str, rules: str, description: str, *, fresh: bool = False) -> str:
    """Create or update the policy ``name`` so its rules are ``rules``; returns its ID."""
    body = {"Name": name, "Description": description, "Rules": rules}
    current = None if fresh else client.acl.policy_read_by_name(name, token=mgmt)
    if current is not None and current.status == 200:
        found = _json(current)
        if found.get("Rules") != rules:
            reply = client.acl.policy_update(found.get("ID", ""), body, token=mgmt)
            _check(reply.status, _text(reply), "policy update")
        return found.get("ID", "")
    reply = client.acl.policy_create(body, token=mgmt)
    _check(reply.status, _text(reply), f"policy create {name}")
    return _json(reply).get("ID", "")


def _ensure_token(client, mgmt: str, secret: str, body: dict, what: str, *, fresh: bool = False) -> bool:
    """A token with SecretID ``secret`` and ``body``'s links: created when Consul does not know it."""
    if not fresh and token_valid(client, secret):
        return False
    reply = client.acl.token_create({"SecretID": secret, **body}, token=mgmt)
    _check(reply.status, _text(reply), what)
    return True


def _check(status: int, text: str, what: str) -> None:
    if status == 403:
        raise PermissionDeniedError(f"Consul refused the ACL request ({what}): {text.strip()[:120]}")
    if status >= 400:
        raise FoundationError(f"Consul ACL request failed ({what}): {status} {text.strip()[:120]}")


def ensure_node(
    client, mgmt: str, *, node: str, datacenter: str, tokens: NodeTokens, dry_run: bool = False, fresh: bool = False
) -> bool:
    """Policy and both tokens of one node exist in Consul; True when something was created.

    ``fresh``: the cluster does not exist yet (a dry run before anything runs): no reads, all writes.
    """
    policy = AGENT_POLICY_PREFIX + node
    _ensure_policy(client, mgmt, policy, agent_rules(node), f"Foundation node agent on {node}", fresh=fresh)
    made = _ensure_token(
        client,
        mgmt,
        tokens.consul,
        {
            "Description": f"Consul agent on {node} (Foundation)",
            "NodeIdentities": [{"NodeName": node, "Datacenter": datacenter}],
        },
        f"agent token {node}",
        fresh=fresh,
    )
    made |= _ensure_token(
        client,
        mgmt,
        tokens.agent,
        {"Description": f"Foundation node agent on {node}", "Policies": [{"Name": policy}]},
        f"node agent token {node}",
        fresh=fresh,
    )
    return made and not dry_run


def ensure_snapshot_token(client, mgmt: str, secret: str, *, dry_run: bool = False, fresh: bool = False) -> bool:
    """The ``foundation-snapshot`` policy and the token ``secret`` with it exist; True when created."""
    _ensure_policy(
        client,
        mgmt,
        SNAPSHOT_POLICY,
        snapshot_rules(),
        "Foundation scheduled snapshots (GET /v1/snapshot); held by the node agents on servers only",
        fresh=fresh,
    )
    made = _ensure_token(
        client,
        mgmt,
        secret,
        {"Description": "Foundation scheduled snapshots (servers only)", "Policies": [{"Name": SNAPSHOT_POLICY}]},
        "snapshot token",
        fresh=fresh,
    )
    return made and not dry_run


def operator_token(cfg: ClusterConfig, state: dict) -> str:
    """The ACL management token: ``acl.token_file``, else the one this cluster already has, else a new one."""
    if cfg.acl.token_file:
        path = Path(os.path.expanduser(cfg.acl.token_file))
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"acl.token_file {path}: {exc.strerror}") from None
        if not token:
            raise UsageError(f"acl.token_file {path} is empty")
    else:
        token = state.get("token") or str(uuid.uuid4())
    secrets.register(token)
    return token
