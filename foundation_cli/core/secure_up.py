"""The secure defaults of ``foundation up`` over SSH: two steps in :data:`orchestrator.UP_STEPS`.

- :func:`secure_plan` (after ``plan``): every host's plan gets its own ACL tokens (the Consul
  agent's, with the node identity, in its Consul config; the node agent's in a 0600 file; on
  servers only, the snapshot token for scheduled snapshots, see :func:`acl.snapshot_rules`), the
  TLS files (CA certificate everywhere; a certificate and key per server, made here with
  ``consul tls``) and the TLS part of its Consul config (HTTPS on the LAN address, plain HTTP on
  loopback only, verified RPC, clients by ``auto_encrypt``).
- :func:`acl_bootstrap` (after ``apply``, before ``wait_cluster``): the management token (one
  we already hold and Consul accepts, else ``PUT /v1/acl/bootstrap``), then each node's policy
  and tokens and the snapshot token. The management token goes to the local state file only.

A cluster made before these defaults (no ACLs, no TLS) is migrated by the same run: its configs
change, so running servers restart one at a time with a leader between (``apply``'s rolling
restart), then ACLs are bootstrapped. When the ACLs were bootstrapped by someone else the run
stops with what to do (:class:`acl.BootstrapRefused`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from foundation_cli.core import acl, bootstrap, tls
from foundation_cli.core.cluster_config import merge_consul
from foundation_cli.core.fanout import for_each
from foundation_cli.errors import FoundationError, UnreachableError
from foundation_cli.raw import secrets
from foundation_cli.raw.address import ConsulAddress
from foundation_cli.raw.recorder import current_recorder

if TYPE_CHECKING:
    from foundation_cli.core.orchestrator import UpRun


def acl_on(run: UpRun) -> bool:
    return bool(run.cfg.acl.enabled)


def tls_on(run: UpRun) -> bool:
    """Foundation's own TLS: on unless turned off or the wizard brings its own three files."""
    return bool(run.cfg.tls.enabled) and not run.cfg.tls.ca_file


def https_port(run: UpRun) -> int:
    return int(run.cfg.ports.get("https", tls.DEFAULT_HTTPS_PORT))


def own_tls_files(run: UpRun) -> bool:
    """The wizard brings its own certificates (``tls: {ca_file, cert_file, key_file}``)."""
    return bool(run.cfg.tls.enabled and run.cfg.tls.ca_file)


def api_address(run: UpRun, address: str, *, https: bool | None = None) -> ConsulAddress:
    """How the operator reaches one server's HTTP API: HTTPS on its LAN address when TLS is on
    (``https`` forces one or the other: a server mid-migration), else plain HTTP."""
    if https is None:
        https = tls_on(run) or own_tls_files(run)
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    if https:
        return ConsulAddress("https", host, https_port(run))
    return ConsulAddress("http", host, int(run.cfg.ports.get("http", 8500)))


def api_url(run: UpRun, address: str, *, https: bool | None = None) -> str:
    """:func:`api_address` as the base URL."""
    return api_address(run, address, https=https).url


def _register_host_secrets(run: UpRun) -> None:
    """Tokens and keys a host's current config holds: masked wherever a diff or probe shows them."""
    for p in run.probes.values():
        conf = p.existing_config
        secrets.register(conf.get("encrypt") if isinstance(conf.get("encrypt"), str) else None)
        tokens = (conf.get("acl") or {}).get("tokens") if isinstance(conf.get("acl"), dict) else None
        if isinstance(tokens, dict):
            for value in tokens.values():
                secrets.register(value if isinstance(value, str) else None)


def secure_plan(run: UpRun) -> None:
    """Tokens, TLS files and config for every host's plan (see the module docstring)."""
    cfg = run.cfg
    _register_host_secrets(run)
    previous = run.state.get("node_tokens") if run.state.get("mode") == "ssh" else None
    if acl_on(run):  # servers only (docs/security.md: who holds which token)
        run.snapshot_token = acl.snapshot_token(run.state if run.state.get("mode") == "ssh" else None)
    run.token = None  # the management token comes from acl_bootstrap, never from a host
    ca_pem = None
    certs: dict[str, tuple[Path, Path]] = {}
    if tls_on(run):
        run.cacert = str(tls.ensure_ca(run.consul_binary or cfg.consul_binary))
        ca_pem = tls.read(tls.ca_paths()[0]) if run.plans else None
        certs = _server_certs(run)
    elif own_tls_files(run) and os.path.isfile(os.path.expanduser(cfg.tls.ca_file or "")):
        run.cacert = os.path.expanduser(cfg.tls.ca_file or "")  # the same CA file here: the CLI verifies with it
    for plan in run.plans.values():
        conf = dict(plan.consul_config)
        ours: dict = {}
        if acl_on(run):
            tokens = acl.node_tokens(previous, plan.node_name)
            run.node_tokens[plan.node_name] = tokens
            conf.pop("acl", None)  # drop the old shared-token stanza consul_config_for may have made
            ours["acl"] = acl.config_block(default_policy=cfg.acl.default_policy, agent_token=tokens.consul)
            plan.agent_token = tokens.agent
            plan.agent_env["CONSUL_HTTP_TOKEN_FILE"] = bootstrap.AGENT_TOKEN_FILE
            plan.files[bootstrap.AGENT_TOKEN_FILE] = (tokens.agent.encode() + b"\n", 0o600)
            if plan.server and run.snapshot_token:
                plan.files[bootstrap.SNAPSHOT_TOKEN_FILE] = (run.snapshot_token.encode() + b"\n", 0o600)
            else:  # a client never holds it (also a former server that became a client)
                plan.remove_files.append(bootstrap.SNAPSHOT_TOKEN_FILE)
        else:
            plan.agent_token = None
            plan.agent_env.pop("CONSUL_HTTP_TOKEN_FILE", None)
        if own_tls_files(run):  # their files: still HTTPS on the LAN address, plain HTTP on loopback only
            conf.pop("verify_incoming", None)  # HTTPS must not demand a client certificate from the CLI
            ours = merge_consul(
                ours,
                {
                    "addresses": {"http": "127.0.0.1"},
                    "ports": {"https": https_port(run)},
                    "verify_incoming_rpc": cfg.tls.verify,
                    "verify_incoming_https": False,
                },
            )
        if ca_pem is not None:
            ours = merge_consul(
                ours, tls.agent_config(server=plan.server, address=plan.address, https_port=https_port(run))
            )
            plan.files[tls.HOST_CA] = (ca_pem, 0o644)
            if plan.server:
                cert, key = certs[plan.node_name]
                plan.files[tls.HOST_CERT] = (tls.read(cert), 0o644)
                plan.files[tls.HOST_KEY] = (tls.read(key), 0o600)
        plan.consul_config = merge_consul(merge_consul(conf, ours), cfg.consul)


def _server_certs(run: UpRun) -> dict[str, tuple[Path, Path]]:
    """Every server's certificate and key (``consul tls cert create``), made side by side: each is a
    start of the 70 MB consul binary, and a new cluster waits for them before any server starts."""
    binary = run.consul_binary or run.cfg.consul_binary
    servers = [p for p in run.plans.values() if p.server]
    certs: dict[str, tuple[Path, Path]] = {}

    def make(plan) -> None:
        certs[plan.node_name] = tls.ensure_server_cert(plan.node_name, plan.address, run.cfg.datacenter, binary)

    for_each(servers, make, parallel=run.parallel)
    return certs


def acl_bootstrap(run: UpRun) -> None:
    """Management token + every node's policy and tokens, once the servers run (see module docstring)."""
    if not acl_on(run) or not run.http_addrs:
        return
    working = [a for a in run.plans if not run.results[a].error]
    if not working:  # nothing was brought up (e.g. `up --host` of a host that failed): keep what we hold
        run.token = run.result.token = run.explicit_token or _token_file(run) or run.state.get("token")
        return
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    dry = run.dry_run
    fresh = dry and not any(p.consul_running for p in run.probes.values())
    addr, cacert = run.http_addrs[0], run.cacert
    if dry:  # nothing was changed: ask the servers as they run now (an open cluster has no HTTPS, no CA yet)
        addr, cacert = _current_api(run, working)
    client = consul_tool.connect(Settings(consul_addr=addr, cacert=cacert), recorder=current_recorder(), timeout=5)
    candidates = [t for t in (run.explicit_token, _token_file(run), run.state.get("token")) if t]
    run.say("cluster", "ACLs: bootstrap and node tokens")
    deadline = time.monotonic() + run.wait_timeout
    if not dry:
        client = _on_the_leader(run, client, cacert, deadline) or client
    mgmt = None
    made = False
    for i, candidate in enumerate(candidates or [None]):
        try:
            timeout = max(1.0, deadline - time.monotonic())
            mgmt, made = acl.bootstrap(client, known=candidate, dry_run=dry, fresh=fresh, timeout=timeout)
            break
        except acl.BootstrapRefused:
            if i == len(candidates) - 1 or not candidates:
                raise
    assert mgmt is not None
    run.token = run.result.token = None if dry else mgmt
    if made and not dry:
        # Kept at once: an `up` killed after this point must not leave a cluster whose token nobody holds.
        from foundation_cli import cluster_state

        cluster_state.save({**(cluster_state.load() or {}), "token": mgmt, "snapshot_token": run.snapshot_token})
    for addr in working:
        plan = run.plans[addr]
        acl.ensure_node(
            client,
            mgmt,
            node=plan.node_name,
            datacenter=run.cfg.datacenter,
            tokens=run.node_tokens[plan.node_name],
            dry_run=dry,
            fresh=fresh,
        )
    if run.snapshot_token and any(run.plans[a].server for a in working):
        acl.ensure_snapshot_token(client, mgmt, run.snapshot_token, dry_run=dry, fresh=fresh)
    if made and not dry:
        run.say("cluster", "ACLs bootstrapped: the management token is in the state file (0600)")


def _on_the_leader(run: UpRun, client, cacert: str | None, deadline: float):
    """A client of the Raft leader's API once there is a leader, or ``None`` (a leader this run did not
    set up: the ACL step then asks the server it has).

    A follower of a new cluster refuses every ACL call ("The ACL system is currently in legacy
    mode") until its own mode check notices the leader's; that check backs off from 50 ms,
    doubling, so it lags the election by up to the time the election took (1.6 s seen on the
    lab). The leader leaves legacy mode as it takes office. Only the final leader answer is
    recorded (``--explain``); the polls before it asked the same question. No leader by
    ``deadline``: :class:`UnreachableError` (the ACL step cannot run without one).
    """
    from foundation_cli.raw.recorder import Recorder
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    servers = {run.plans[a].address: a for a in run.plans if run.plans[a].server and not run.results[a].error}
    quiet = Recorder()
    probe = consul_tool.connect(
        Settings(consul_addr=client.http.base_uri, cacert=cacert), recorder=quiet, timeout=2, failover=False
    )
    why = "the servers answer, none of them is the leader"
    while time.monotonic() < deadline:
        try:
            leader = probe.status.leader()
        except FoundationError as exc:  # its API is not listening yet
            leader, why = "", exc.message
        if leader:
            current_recorder().add(quiet.operations[-1])
            host = raft_host(leader)
            if host not in servers:
                return None
            url = api_url(run, host)
            if url == client.http.base_uri:
                return client
            return consul_tool.connect(Settings(consul_addr=url, cacert=cacert), recorder=current_recorder(), timeout=5)
        time.sleep(0.1)
    if quiet.operations:
        current_recorder().add(quiet.operations[-1])
    raise UnreachableError(
        f"no Raft leader after {run.wait_timeout:.0f} s, which the ACL step needs: {why}",
        hint="the servers may still be electing one (their log: /var/log/foundation/consul.log, or journalctl -u "
        "foundation-consul); run `foundation up` again",
    )


def raft_host(leader: str) -> str:
    """The host of a Raft address as ``/v1/status/leader`` gives it (``"10.0.0.1:8300"``,
    ``"[fd00::1]:8300"``): the address the server advertises, which is its plan's address."""
    return leader.rsplit(":", 1)[0].strip("[]")


def _current_api(run: UpRun, working: list[str]) -> tuple[str, str | None]:
    """(URL, CA) of the first server as it runs now: HTTPS only when its config has the port and the CA exists."""
    servers = [a for a in working if run.plans[a].server and run.probes[a].consul_running]
    if not servers:
        return run.http_addrs[0], run.cacert
    plan = run.plans[servers[0]]
    conf = run.probes[servers[0]].existing_config
    https = bool((conf.get("ports") or {}).get("https")) and bool(run.cacert and os.path.isfile(run.cacert))
    return api_url(run, plan.address, https=https), run.cacert if https else None


def held_token(run: UpRun) -> str | None:
    """The management token we hold before the ACL step: ``acl.token_file``, else the state file's."""
    return _token_file(run) or (run.state.get("token") if run.state.get("mode") == "ssh" else None)


def _token_file(run: UpRun) -> str | None:
    if not run.cfg.acl.token_file:
        return None
    return acl.operator_token(run.cfg, {})


def keep_after_down(state: dict) -> None:
    """After a full ``down`` without ``--purge``: the servers keep their data and with it their ACLs,
    so the management token, the node tokens and the CA stay in the state file for the next ``up``
    (no address: commands do not point at the stopped cluster)."""
    from foundation_cli.core import cluster_state

    if state.get("token"):
        kept = (
            "cluster_id",
            "mode",
            "token",
            "node_tokens",
            "snapshot_token",
            "cacert",
            "gossip_key_file",
            "datacenter",
        )
        cluster_state.save({k: state[k] for k in kept if k in state} | {"down": True})
