"""Migrating a running cluster to ACLs and TLS without losing quorum (``up`` on an open cluster).

A server that *enforces* TLS on incoming RPC refuses the plain RPC of a server that does not
speak it yet, so restarting servers straight into the final config splits the cluster: with
three servers the second restart leaves the untouched one alone and quorum is lost. Consul's
own procedure (enable TLS on an existing datacenter) is followed instead, in *levels*; every
running server whose config changes goes through each level one at a time, followers first and
the leader last, waiting after each restart until it is an alive member and autopilot is
healthy with the failure tolerance it had (:func:`foundation_cli.core.upgrade.wait_recovered`,
the wait ``foundation upgrade`` uses):

0. **offer**: the CA, certificate and key in place, HTTPS on, ``auto_encrypt.allow_tls``,
   nothing verified (``verify_incoming_rpc``/``verify_outgoing``/``verify_server_hostname``
   false); ACLs enabled with ``default_policy = "allow"`` (what was allowed stays allowed);
   HTTP stays where it was.
   Then the ACLs are bootstrapped (every server has them on: Consul leaves its legacy ACL mode)
   and the tokens made; the node agents on the servers get theirs (no Consul restart); the
   clients get their final config (their RPC is TLS by ``auto_encrypt``, which the servers
   already accept).
1. **outgoing**: servers speak TLS to each other (``verify_outgoing``,
   ``verify_server_hostname``), still accept plain; ``default_policy`` becomes the final one.
2. **final**: ``verify_incoming_rpc``, plain HTTP on loopback only.

A property the host's current config already has is never relaxed (a secured cluster whose
config changes for another reason goes straight to its final config, one server at a time).
What cannot be kept: with one or two servers the failure tolerance is 0, so every server
restart stops the cluster until it is back; ``up`` says so before it starts.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from foundation_cli.core import bootstrap, secure_up, upgrade
from foundation_cli.errors import FoundationError

if TYPE_CHECKING:
    from foundation_cli.core.cluster_config import HostConfig
    from foundation_cli.core.orchestrator import UpRun

LEVELS = ("offer", "outgoing", "final")
LEVEL_TEXT = {
    "offer": "TLS offered, not enforced; ACLs on (allow)",
    "outgoing": "TLS between servers; ACL default policy",
    "final": "TLS enforced; plain HTTP on loopback only",
}


def _on(value: Any) -> bool:
    return value is True


def relaxed(final: dict[str, Any], existing: dict[str, Any], level: str) -> dict[str, Any]:
    """``final`` with what ``existing`` does not enforce yet held back until ``level`` allows it."""
    conf = copy.deepcopy(final)
    rank = LEVELS.index(level)
    if rank < 2:
        if not (_on(existing.get("verify_incoming_rpc")) or _on(existing.get("verify_incoming"))):
            for key in ("verify_incoming_rpc", "verify_incoming"):
                if _on(conf.get(key)):
                    conf[key] = False
        want = (conf.get("addresses") or {}).get("http")
        had = (existing.get("addresses") or {}).get("http")
        if want != had:
            addresses = dict(conf.get("addresses") or {})
            if had is None:
                addresses.pop("http", None)
            else:
                addresses["http"] = had
            if addresses:
                conf["addresses"] = addresses
            else:
                conf.pop("addresses", None)
    if rank < 1:
        if not _on(existing.get("verify_outgoing")):
            for key in ("verify_outgoing", "verify_server_hostname"):
                if _on(conf.get(key)):
                    conf[key] = False
        acl = conf.get("acl")
        old: dict[str, Any] = existing["acl"] if isinstance(existing.get("acl"), dict) else {}
        denied = _on(old.get("enabled")) and old.get("default_policy") == "deny"
        if isinstance(acl, dict) and acl.get("default_policy") == "deny" and not denied:
            conf["acl"] = {**acl, "default_policy": "allow"}
    return conf


def levels(final: dict[str, Any], existing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config of each level for one server (``final`` last; a level may equal the next)."""
    return {level: relaxed(final, existing, level) for level in LEVELS}


def needed(final: dict[str, Any], existing: dict[str, Any]) -> bool:
    """Does this running server need the levels (``final`` enforces something it does not)?"""
    return relaxed(final, existing, "offer") != final


def _api(run: UpRun, address: str, config: dict[str, Any]) -> str:
    """How to reach a server now: HTTPS when its running config has the port, else plain HTTP."""
    if (config.get("ports") or {}).get("https"):
        return secure_up.api_url(run, address, https=True)
    return secure_up.api_url(run, address, https=False)


def _acl_enabled(config: dict[str, Any]) -> bool:
    acl = config.get("acl")
    return isinstance(acl, dict) and _on(acl.get("enabled"))


def _client(run: UpRun, hosts: list[HostConfig], restarting: str | None):
    """A quiet client on a server other than the one restarting (its current config says how)."""
    from foundation_cli.raw.recorder import Recorder
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    others = [h for h in hosts if h.address != restarting] or hosts
    # Before the ACL bootstrap nobody holds a token, and a server with ACLs on answers anonymous
    # with "ACL not found" (403) as long as the leader has them off (Consul 1.8 resolves the
    # anonymous token locally in the primary datacenter; only a leader with ACLs on creates it):
    # ask a server that still has them off while there is one.
    others.sort(key=lambda o: _acl_enabled(run.probes[o.address].existing_config))
    h = others[0]
    plan = run.plans[h.address]
    current = run.probes[h.address].existing_config
    addr = _api(run, plan.address, current)
    return consul_tool.connect(
        Settings(consul_addr=addr, token=_token(run), cacert=run.cacert if addr.startswith("https") else None),
        recorder=Recorder(),
        timeout=3,
    )


def _token(run: UpRun) -> str | None:
    """The management token: made by this run's ACL step, else the one we hold (the ACL step runs after
    ``apply``: on a secured cluster an anonymous client sees no members and no autopilot health)."""
    return run.token or run.explicit_token or secure_up.held_token(run)


def order(run: UpRun, servers: list[HostConfig]) -> list[HostConfig]:
    """Followers first, the leader last (one election per level), as ``foundation upgrade`` does."""
    try:
        raft = _client(run, servers, None).operator.raft_config()
    except Exception:  # noqa: BLE001 - no raft view: keep the file's order
        return servers
    leader = upgrade.raft_leader(raft)
    return sorted(servers, key=lambda h: 1 if leader and run.plans[h.address].address == leader.host else 0)


def tolerance(run: UpRun, servers: list[HostConfig]) -> tuple[int, str | None]:
    """The failure tolerance now, and a sentence when restarting a server will stop the cluster."""
    try:
        health = _client(run, servers, None).operator.autopilot_health()
    except Exception as exc:  # noqa: BLE001
        return 0, f"cannot read autopilot health ({exc}): each server restart may stop the cluster briefly"
    value = int(health.get("FailureTolerance") or 0)
    if value < 1:
        count = len(health.get("Servers") or []) or len(servers)
        return 0, (
            f"failure tolerance is 0 ({count} server{'s' if count != 1 else ''}): every server restart of this "
            "migration stops the cluster until that server is back (quorum cannot be kept; 3 servers can)"
        )
    return value, None


def _restart_with(run: UpRun, h: HostConfig, config: dict[str, Any]) -> None:
    """Write the TLS files and ``config`` on a running server and restart its Consul (the agent untouched)."""
    p = run.probes[h.address]
    plan = run.plans[h.address]
    step_plan = dataclasses.replace(
        plan,
        consul_config=config,
        files={k: v for k, v in plan.files.items() if k != bootstrap.AGENT_TOKEN_FILE},
    )
    conn = run.conns[h.address]
    steps = run.results[h.address].steps  # appended to: the result shows every level's steps
    binary, path = bootstrap.ensure_consul(
        conn, p, step_plan, local_binary=lambda: run.local_binary(), say=lambda m: run.say(h.address, m)
    )
    files, changed = bootstrap.write_files(conn, step_plan)
    written = bootstrap.write_consul_config(conn, p, step_plan)
    if written.state == "unchanged" and binary.state == "unchanged" and not changed:
        return
    steps += [s for s in (binary, files, written) if s is not None]
    steps.append(
        bootstrap.ensure_service(
            conn,
            p,
            name="consul",
            description="Consul agent (Foundation)",
            argv=[path, "agent", f"-config-dir={bootstrap.CONFIG_DIR}"],
            env={},
            running=True,
            restart=True,
        )
    )
    run.probes[h.address] = dataclasses.replace(p, config=bootstrap.render_config(config), consul_running=True)


def wait_after(run: UpRun, servers: list[HostConfig], h: HostConfig, *, tolerance_before: int, timeout: float) -> None:
    """After ``h``'s restart: alive member, autopilot healthy with the tolerance it had (asked of another server)."""
    client = _client(run, servers, h.address)
    upgrade.wait_recovered(
        client, run.plans[h.address].node_name, server=True, tolerance=tolerance_before, timeout=timeout
    )


def roll(
    run: UpRun,
    servers: list[HostConfig],
    original: dict[str, dict[str, Any]],
    level: str,
    *,
    tolerance_before: int,
    log: list[tuple[str, str, float]],
    timeout: float = 90.0,
) -> None:
    """One level on every server, one at a time, each followed by the health wait; stops at the first failure.

    ``original``: each server's config as it was before this run (what it already enforced)."""
    for h in order(run, servers):
        if run.results[h.address].error:
            continue
        config = relaxed(run.plans[h.address].consul_config, original[h.address], level)
        if config == run.probes[h.address].existing_config:
            continue
        run.say(h.address, f"rolling restart ({level}: {LEVEL_TEXT[level]})")
        t0 = time.monotonic()
        try:
            _restart_with(run, h, config)
            wait_after(run, servers, h, tolerance_before=tolerance_before, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - that host failed: the roll stops here
            run.results[h.address].fail(exc)
            run.say(h.address, "failed")
            raise FoundationError(
                f"migration stopped at {h.address} ({level}): {getattr(exc, 'message', exc)}",
                hint="the servers not restarted yet keep their previous config; fix that host and run up again",
            ) from None
        log.append((h.address, level, round(time.monotonic() - t0, 1)))


def migrate(
    run: UpRun,
    servers: list[HostConfig],
    rest: list[HostConfig],
    *,
    apply_host: Callable[[UpRun, HostConfig], None],
    set_http_addrs: Callable[[UpRun], None],
) -> None:
    """The levels (module docstring) over the running ``servers``; ``rest`` (clients, new hosts) between."""
    original = {h.address: run.probes[h.address].existing_config for h in servers}
    before, warning = tolerance(run, servers)
    if warning:  # said, not a result warning: those make `up` fail (the cluster did not form)
        run.say("cluster", "warning: " + warning)
    run.say(
        "cluster",
        f"migrating {len(servers)} running servers to ACLs/TLS in rolling levels "
        f"({', '.join(LEVELS)}), one server at a time, waiting for autopilot health after each",
    )
    log: list[tuple[str, str, float]] = []
    roll(run, servers, original, "offer", tolerance_before=before, log=log)
    set_http_addrs(run)
    if secure_up.acl_on(run):
        secure_up.acl_bootstrap(run)
        run.acl_bootstrapped = True
    run.each(lambda r, h: _agent_only(r, h, apply_host), servers)  # node agents get their tokens
    new_servers = [h for h in rest if run.plans[h.address].server]
    run.each(apply_host, [h for h in rest if h not in new_servers])  # clients: final config, RPC over TLS
    roll(run, servers, original, "outgoing", tolerance_before=before, log=log)
    roll(run, servers, original, "final", tolerance_before=before, log=log)
    run.each(apply_host, new_servers)  # a new server enforcing TLS could not follow the others before
    run.say("cluster", "migration: " + ", ".join(f"{a} {lv} {t:.0f}s" for a, lv, t in log))


def _agent_only(run: UpRun, h: HostConfig, apply_host: Callable[[UpRun, HostConfig], None]) -> None:
    """Everything but a Consul restart on a server mid-migration: the node agent and its token file."""
    plan = run.plans[h.address]
    steps = list(run.results[h.address].steps)
    run.plans[h.address] = dataclasses.replace(
        plan,
        consul_config=run.probes[h.address].existing_config,  # as it runs now: no restart here
        files={k: v for k, v in plan.files.items() if k == bootstrap.AGENT_TOKEN_FILE},
    )
    try:
        apply_host(run, h)
    finally:
        run.plans[h.address] = plan
        run.results[h.address].steps = steps + run.results[h.address].steps


def dry_run_note(run: UpRun, servers: list[HostConfig]) -> None:
    """``up --dry-run`` of a migration: the script shows each host's final config only, so say how it goes."""
    moving = [
        h
        for h in servers
        if run.probes[h.address].consul_running
        and needed(run.plans[h.address].consul_config, run.probes[h.address].existing_config)
    ]
    if len(moving) < 2:
        return
    run.result.warnings.append(
        f"{len(moving)} running servers would be migrated to ACLs/TLS in rolling levels ({', '.join(LEVELS)}; "
        "ACL bootstrap and the clients after the first), one server at a time with a health wait after each; "
        "the commands shown are each host's final state only: replayed as they are, they would restart the "
        "servers straight into enforced TLS and lose quorum. Run `foundation up` itself."
    )
