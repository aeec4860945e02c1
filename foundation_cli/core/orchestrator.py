"""`up` and `down` over SSH for the whole cluster: every host in parallel, failures kept per host.

1. connect + probe every host (parallel; a host that fails is reported, the others go on)
2. decide roles (pinned servers, hosts that already are servers, then the first ones in
   the file), node names (explicit, existing, else hostname, made unique), the gossip
   key (state dir, else a host's config, else new) and the cluster id
3. apply each host's plan (parallel, servers submitted first)
4. wait for a leader and every host an alive member, then write the cluster record
   (KV ``foundation/cluster``) and the local state file.
"""

from __future__ import annotations

import base64
import contextvars
import json
import os
import secrets as pysecrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation_cli.core import bootstrap, cluster_state, keys
from foundation_cli.core.bootstrap import HostPlan, HostResult, Probe
from foundation_cli.core.cluster_config import ClusterConfig, HostConfig, merge_consul
from foundation_cli.errors import FoundationError, UnreachableError
from foundation_cli.raw import secrets
from foundation_cli.raw.recorder import current_recorder
from foundation_cli.tools import ssh

Progress = Callable[[str, str], None]  # (host, message)
AGENT_SERVICE = keys.AGENT_SERVICE


@dataclass
class UpResult:
    hosts: list[HostResult] = field(default_factory=list)
    cluster_id: str = ""
    datacenter: str = "dc1"
    http_addr: str = ""
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    token: str | None = None  # ACL operator token (wizard mode); never rendered

    @property
    def failed(self) -> list[HostResult]:
        return [h for h in self.hosts if h.error]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "datacenter": self.datacenter,
            "http_addr": self.http_addr,
            "hosts": [h.to_dict() for h in self.hosts],
            "removed": self.removed,
            "warnings": self.warnings,
        }


def gossip_key_path() -> Path:
    return cluster_state.state_dir() / "gossip.key"


def _load_gossip_key() -> str | None:
    try:
        key = gossip_key_path().read_text().strip()
    except OSError:
        return None
    return key or None


def _save_gossip_key(key: str) -> None:
    path = gossip_key_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")


def ssh_options(cfg: ClusterConfig, *, accept_new: bool = False, prompt=None) -> ssh.SSHOptions:
    s = cfg.ssh
    return ssh.SSHOptions(
        user=s.user,
        port=s.port,
        identity_file=os.path.expanduser(s.identity_file) if s.identity_file else None,
        known_hosts=os.path.expanduser(s.known_hosts) if s.known_hosts else None,
        config_file=s.config_file,
        connect_timeout=s.connect_timeout,
        accept_new_host_keys=accept_new or s.accept_new_host_keys,
        prompt=prompt,
    )


def _in_context(pool: ThreadPoolExecutor, fn, *args):
    ctx = contextvars.copy_context()
    return pool.submit(ctx.run, fn, *args)


def _error_result(alias: str, exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, FoundationError):
        return exc.message + (f" ({exc.hint})" if exc.hint else ""), int(exc.exit_status)
    return f"{type(exc).__name__}: {exc}", 1


def _unique_names(hosts: list[HostConfig], probes: dict[str, Probe]) -> dict[str, str]:
    """Explicit node_name, else the name a host's config already has, else its hostname — unique."""
    names: dict[str, str] = {}
    for h in hosts:
        p = probes.get(h.address)
        if h.node_name:
            names[h.address] = h.node_name
        elif p and p.existing_config.get("node_name"):
            names[h.address] = p.existing_config["node_name"]
    taken = set(names.values())
    wanted: dict[str, str] = {}
    for h in hosts:
        if h.address in names or h.address not in probes:
            continue
        raw = (probes[h.address].hostname or h.address).split(".")[0].lower()
        wanted[h.address] = "".join(c if c.isalnum() else "-" for c in raw).strip("-") or "node"
    counts: dict[str, int] = {}
    for name in wanted.values():
        counts[name] = counts.get(name, 0) + 1
    for addr, name in wanted.items():
        if counts[name] > 1 or name in taken:
            ip = probes[addr].addr or addr
            name = f"{name}-{ip.replace('.', '-').replace(':', '-')}"
        names[addr] = name
        taken.add(name)
    return names


def _choose_servers(cfg: ClusterConfig, hosts: list[HostConfig], probes: dict[str, Probe]) -> set[str]:
    count = cfg.server_count
    chosen = [h.address for h in hosts if h.role == "server"]
    for h in hosts:
        p = probes.get(h.address)
        if len(chosen) >= count:
            break
        if h.address not in chosen and h.role != "client" and p and p.existing_config.get("server"):
            chosen.append(h.address)
    for h in hosts:
        if len(chosen) >= count:
            break
        if h.address not in chosen and h.role != "client":
            chosen.append(h.address)
    return set(chosen)


def consul_config_for(
    cfg: ClusterConfig,
    *,
    node_name: str,
    address: str,
    server: bool,
    server_addrs: list[str],
    gossip_key: str,
    cluster_id: str,
    bootstrap_expect: int,
    token: str | None = None,
) -> dict[str, Any]:
    """One host's Consul agent config: ours, then the wizard's raw ``consul:`` merged over it."""
    conf: dict[str, Any] = {
        "datacenter": cfg.datacenter,
        "node_name": node_name,
        "server": server,
        "bind_addr": address,
        "advertise_addr": address,
        "client_addr": f"127.0.0.1 {address}",
        "data_dir": bootstrap.DATA_DIR,
        "encrypt": gossip_key,
        "retry_join": [a for a in server_addrs],
        "disable_update_check": True,
        "leave_on_terminate": not server,
        "log_level": "INFO",
        "node_meta": {"foundation_cluster": cluster_id},
        "ports": {k: v for k, v in cfg.ports.items()},
        "performance": {"raft_multiplier": 1},
    }
    if server and bootstrap_expect:
        conf["bootstrap_expect"] = bootstrap_expect
    if cfg.acl.enabled:
        conf["acl"] = {
            "enabled": True,
            "default_policy": cfg.acl.default_policy,
            "enable_token_persistence": True,
        }
        if token:
            conf["acl"]["tokens"] = {"master": token, "agent": token} if server else {"agent": token}
    if cfg.tls.ca_file:
        conf.update(
            ca_file=cfg.tls.ca_file,
            cert_file=cfg.tls.cert_file,
            key_file=cfg.tls.key_file,
            verify_incoming=cfg.tls.verify,
            verify_outgoing=cfg.tls.verify,
        )
    return merge_consul(conf, cfg.consul)


def _local_binary(explicit: str | None) -> bytes | None:
    import shutil

    path = shutil.which(explicit or "consul") if not (explicit and os.path.sep in explicit) else explicit
    if not path or not os.path.isfile(path):
        return None
    return Path(path).read_bytes()


def up(
    cfg: ClusterConfig,
    *,
    consul_binary: str | None = None,
    accept_new: bool = False,
    only: list[str] | None = None,
    prompt=None,
    progress: Progress | None = None,
    wait_timeout: float = 90.0,
    join: list[str] | None = None,
) -> UpResult:
    """Bring every host of ``cfg`` to its plan; per-host failures are kept, never raised.

    ``join``: servers of an existing cluster (the ``consul`` strategy's join-only targets): our hosts
    join them as clients (unless pinned ``role: server``) and are never their bootstrap.
    """
    say = progress or (lambda _h, _m: None)
    recorder = current_recorder()
    opts = ssh_options(cfg, accept_new=accept_new, prompt=prompt)
    hosts = [h for h in cfg.hosts if not only or h.address in only or (h.node_name and h.node_name in only)]
    results = {h.address: HostResult(alias=h.address) for h in hosts}
    conns: dict[str, ssh.Connection] = {}
    probes: dict[str, Probe] = {}
    state = cluster_state.load() or {}

    def connect_probe(h: HostConfig) -> None:
        say(h.address, "connecting")
        conn = ssh.connect(
            h.address,
            opts,
            user=h.user,
            port=h.port,
            identity=os.path.expanduser(h.identity_file) if h.identity_file else None,
        )
        conns[h.address] = conn
        say(h.address, "probing")
        probes[h.address] = bootstrap.probe(
            conn, install_root=h.install_root or cfg.agent.install_root, python=h.python or cfg.agent.python
        )

    def guarded(h: HostConfig, fn) -> None:
        try:
            fn(h)
        except Exception as exc:  # noqa: BLE001 - per host: record and go on with the others
            results[h.address].error, results[h.address].exit_status = _error_result(h.address, exc)
            say(h.address, "failed")

    bundle_box: dict[str, Any] = {}
    binary_lock = threading.Lock()
    binary_box: dict[str, Any] = {}

    def local_binary() -> bytes | None:
        """Read the operator's consul only when a host needs it (67 MB), once."""
        with binary_lock:
            if "b" not in binary_box:
                binary_box["b"] = _local_binary(consul_binary or cfg.consul_binary)
            return binary_box["b"]

    with ThreadPoolExecutor(max_workers=max(1, len(hosts)) + 2) as pool:
        from foundation_cli.core import agent_bundle

        bundle_future = _in_context(pool, agent_bundle.build)
        futures = [_in_context(pool, guarded, h, connect_probe) for h in hosts]
        for f in futures:
            f.result()
        bundle_box["b"] = bundle_future.result()

    # Cluster-wide decisions.
    gossip = _load_gossip_key()
    if not gossip:
        gossip = next(
            (p.existing_config.get("encrypt") for p in probes.values() if p.existing_config.get("encrypt")), None
        )
    gossip = gossip or base64.b64encode(pysecrets.token_bytes(32)).decode()
    token = operator_token(cfg, state) if cfg.acl.enabled else None
    secrets.register(gossip)
    cluster_id = state.get("cluster_id") if state.get("mode") == "ssh" else None
    cluster_id = (
        cluster_id
        or next(
            (
                p.existing_config.get("node_meta", {}).get("foundation_cluster")
                for p in probes.values()
                if p.existing_config.get("node_meta", {}).get("foundation_cluster")
            ),
            None,
        )
        or str(uuid.uuid4())
    )
    all_hosts = cfg.hosts
    names = _unique_names(all_hosts, probes)
    servers = {h.address for h in all_hosts if h.role == "server"} if join else _choose_servers(cfg, all_hosts, probes)
    server_addrs = [
        (probes[h.address].addr if h.address in probes else h.address) for h in all_hosts if h.address in servers
    ]
    plans: dict[str, HostPlan] = {}
    for h in hosts:
        if h.address not in probes:
            continue
        p = probes[h.address]
        is_server = h.address in servers
        plan = HostPlan(
            alias=h.address,
            address=p.addr,
            node_name=names[h.address],
            server=is_server,
            install_root=h.install_root or cfg.agent.install_root,
            python=h.python or cfg.agent.python,
            http_port=cfg.ports.get("http", 8500),
            agent_env=dict(cfg.agent.env, **({"CONSUL_HTTP_TOKEN_FILE": bootstrap.AGENT_TOKEN_FILE} if token else {})),
            agent_token=token,
            consul_config=consul_config_for(
                cfg,
                node_name=names[h.address],
                address=p.addr,
                server=is_server,
                server_addrs=server_addrs + [a for a in (join or []) if a not in server_addrs],
                gossip_key=gossip,
                token=token,
                cluster_id=cluster_id,
                bootstrap_expect=0 if join else len(servers),
            ),
        )
        plans[h.address] = plan
        r = results[h.address]
        r.node_name, r.role, r.address = plan.node_name, "server" if is_server else "client", plan.address

    def do_apply(h: HostConfig) -> None:
        plan = plans[h.address]
        steps = bootstrap.apply(
            conns[h.address],
            probes[h.address],
            plan,
            local_binary=local_binary,
            bundle=bundle_box["b"],
            say=lambda msg: say(h.address, msg),
        )
        results[h.address].steps = steps
        say(h.address, "done")

    ordered = sorted((h for h in hosts if h.address in plans), key=lambda h: 0 if plans[h.address].server else 1)
    # Running servers whose config changes restart one at a time (quorum kept); everything else in parallel.
    rolling = [h for h in ordered if plans[h.address].server and _config_changes(probes[h.address], plans[h.address])]
    if len(rolling) < 2 or recorder.dry_run:
        rolling = []
    parallel = [h for h in ordered if h not in rolling]
    if parallel:
        with ThreadPoolExecutor(max_workers=len(parallel)) as pool:
            for f in [_in_context(pool, guarded, h, do_apply) for h in parallel]:
                f.result()
    for h in rolling:
        say(h.address, "rolling restart")
        guarded(h, do_apply)
        if not results[h.address].error:
            _wait_leader_at(f"http://{plans[h.address].address}:{plans[h.address].http_port}", token, timeout=60)

    if not recorder.dry_run:
        _save_gossip_key(gossip)
    result = UpResult(hosts=[results[h.address] for h in hosts], cluster_id=cluster_id, datacenter=cfg.datacenter)
    result.token = token
    previous = state.get("hosts") or []
    current_addrs = {h.address for h in cfg.hosts}
    result.removed = [a for a in previous if a not in current_addrs]

    ok_servers = [plans[a].address for a in plans if plans[a].server and not results[a].error]
    http_addrs = [f"http://{a}:{cfg.ports.get('http', 8500)}" for a in ok_servers]
    if not http_addrs and only and state.get("mode") == "ssh":  # `up --host CLIENT`: reach the known servers
        http_addrs = state.get("consul_http_addrs") or []
    if not http_addrs and join:  # clients of an existing cluster: ask its servers
        http_addrs = [f"http://{join[0]}:{cfg.ports.get('http', 8500)}"]
    if http_addrs:
        result.http_addr = http_addrs[0]
    if recorder.dry_run or not http_addrs:
        for c in conns.values():
            c.close()
        return result

    try:
        say("cluster", "waiting for a leader and every member")
        _wait_cluster(result, plans, results, cfg, timeout=wait_timeout, say=say)
        say("cluster", "writing the cluster record")
        _write_record(result, cfg, server_addrs, cluster_id)
    except FoundationError as exc:
        result.warnings.append(exc.message)
    finally:
        for c in conns.values():
            c.close()
    cluster_state.save(
        {
            "cluster_id": cluster_id,
            "consul_http_addr": result.http_addr,
            "consul_http_addrs": http_addrs
            if not only
            else sorted(set(http_addrs) | set(state.get("consul_http_addrs") or [])),
            "datacenter": cfg.datacenter,
            "mode": "ssh",
            "config_mode": cfg.mode,
            "servers": server_addrs,
            "hosts": sorted(current_addrs | set(result.removed)),  # removed ones stay known until `down --host`
            "nodes": {**(state.get("nodes") or {}), **{a: plans[a].node_name for a in plans}},
            "gossip_key_file": str(gossip_key_path()),
            "token": token,
            "ssh": {
                "user": cfg.ssh.user,
                "identity_file": cfg.ssh.identity_file,
                "known_hosts": cfg.ssh.known_hosts,
                "port": cfg.ssh.port,
            },
            "config_path": cfg.source,
        }
    )
    return result


def operator_token(cfg: ClusterConfig, state: dict) -> str:
    """The ACL management token: ``acl.token_file``, else the one this cluster already has, else a new one."""
    from foundation_cli.errors import UsageError

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


def _config_changes(p: Probe, plan: HostPlan) -> bool:
    """A running Consul whose config will be rewritten (so restarted)."""
    return p.consul_running and p.config is not None and p.config != bootstrap.render_config(plan.consul_config)


def _wait_leader_at(addr: str, token: str | None, *, timeout: float) -> None:
    """After one server's restart: wait until it sees a leader again before touching the next."""
    client, _quiet = _client(addr, token)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.status.leader():
                return
        except Exception:  # noqa: BLE001 - restarting
            pass
        time.sleep(0.25)


def _client(addr: str, token: str | None = None):
    from foundation_cli.raw.recorder import Recorder
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    quiet = Recorder()
    return consul_tool.connect(Settings(consul_addr=addr, token=token), recorder=quiet, timeout=3), quiet


def _wait_cluster(result: UpResult, plans, results, cfg: ClusterConfig, *, timeout: float, say: Progress) -> None:
    """Leader elected and every (non-failed) host an alive member; agents registered (warn only)."""
    client, quiet = _client(result.http_addr, result.token)
    expected = {plans[a].node_name: a for a in plans if not results[a].error}
    deadline = time.monotonic() + timeout
    missing: set[str] = set(expected)
    while time.monotonic() < deadline:
        try:
            leader = client.status.leader()
            members = client.agent.members()
        except Exception:  # noqa: BLE001 - still starting
            leader, members = "", []
        alive = {m["Name"] for m in members if m.get("Status") == 1}
        missing = set(expected) - alive
        if leader and not missing:
            break
        time.sleep(0.25)
    else:
        raise UnreachableError(
            f"cluster not formed after {timeout:.0f} s: "
            + (f"not alive: {', '.join(sorted(missing))}" if missing else "no leader")
        )
    if quiet.operations:
        current_recorder().add(quiet.operations[-1])
    # Agents: registered as a Consul service (the agent of issue 4); report, do not fail.
    say("cluster", "waiting for the node agents to register")
    reg_deadline = time.monotonic() + 10
    unregistered = set(expected)
    while time.monotonic() < reg_deadline and unregistered:
        try:
            _i, nodes = client.catalog.service(AGENT_SERVICE)
        except Exception:  # noqa: BLE001
            nodes = []
        unregistered = set(expected) - {n.get("Node") for n in nodes}
        if unregistered:
            time.sleep(0.3)
    for node in sorted(unregistered):
        results[expected[node]].warnings.append(f"node agent not registered as {AGENT_SERVICE!r} yet")


def _write_record(result: UpResult, cfg: ClusterConfig, server_addrs: list[str], cluster_id: str) -> None:
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    client = consul_tool.connect(Settings(consul_addr=result.http_addr, token=result.token))
    record = {
        "cluster_id": cluster_id,
        "datacenter": cfg.datacenter,
        "mode": cfg.mode,
        "auto_join": cfg.cluster.auto_join,
        "servers": server_addrs,
        "http_addr": result.http_addr,
    }
    with consul_tool.translate_errors("cluster record"):
        _i, entry = client.kv.get(keys.CLUSTER)
        existing = json.loads(entry["Value"]) if entry and entry.get("Value") else None
        if existing != record:
            client.kv.put(keys.CLUSTER, json.dumps(record, sort_keys=True))


def down(
    cfg: ClusterConfig,
    *,
    purge: bool = False,
    only: list[str] | None = None,
    accept_new: bool = False,
    prompt=None,
    progress: Progress | None = None,
) -> list[HostResult]:
    """Stop the agent and Consul (after ``consul leave``) on each host; clients first, servers last."""
    say = progress or (lambda _h, _m: None)
    state = cluster_state.load() or {}
    opts = ssh_options(cfg, accept_new=accept_new, prompt=prompt)
    hosts = list(cfg.hosts)
    known = {h.address for h in hosts}
    for addr in state.get("hosts") or []:
        if addr not in known:
            hosts.append(HostConfig(address=addr))
    if only:
        nodes = state.get("nodes") or {}
        hosts = [h for h in hosts if h.address in only or nodes.get(h.address) in only]
        if not hosts:
            from foundation_cli.errors import NotFoundError

            raise NotFoundError(f"no such host in the cluster: {', '.join(only)}")
    results = {h.address: HostResult(alias=h.address) for h in hosts}
    conns: dict[str, ssh.Connection] = {}
    probes: dict[str, Probe] = {}

    def fail(h: HostConfig, exc: BaseException) -> None:
        results[h.address].error, results[h.address].exit_status = _error_result(h.address, exc)
        say(h.address, "failed")

    def agent_phase(h: HostConfig) -> None:
        try:
            say(h.address, "connecting")
            conn = ssh.connect(h.address, opts, user=h.user, port=h.port)
            conns[h.address] = conn
            p = bootstrap.probe(conn, install_root=h.install_root or cfg.agent.install_root, python="python3")
            probes[h.address] = p
            results[h.address].node_name = p.existing_config.get("node_name", "")
            results[h.address].role = "server" if p.existing_config.get("server") else "client"
            say(h.address, "stopping the agent")
            results[h.address].steps.append(bootstrap.stop_agent(conn, p))
        except Exception as exc:  # noqa: BLE001
            fail(h, exc)

    def consul_phase(h: HostConfig) -> None:
        p = probes[h.address]
        try:
            say(h.address, "stopping consul")
            results[h.address].steps += bootstrap.stop_consul(
                conns[h.address],
                p,
                install_root=h.install_root or cfg.agent.install_root,
                http_port=cfg.ports.get("http", 8500),
                purge=purge,
                leave=bool(only) or not p.existing_config.get("server"),
            )
            say(h.address, "done")
        except Exception as exc:  # noqa: BLE001
            fail(h, exc)

    def parallel(fn, batch) -> None:
        if batch:
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                for f in [_in_context(pool, fn, h) for h in batch]:
                    f.result()

    # Agents everywhere first; then clients leave; servers stop last.
    parallel(agent_phase, hosts)
    ready = [h for h in hosts if h.address in probes and not results[h.address].error]
    parallel(consul_phase, [h for h in ready if not probes[h.address].existing_config.get("server")])
    parallel(consul_phase, [h for h in ready if probes[h.address].existing_config.get("server")])
    for c in conns.values():
        c.close()
    if not current_recorder().dry_run and not only and not any(r.error for r in results.values()):
        cluster_state.clear()
        if purge:
            gossip_key_path().unlink(missing_ok=True)
    elif not current_recorder().dry_run and only and state:
        state["hosts"] = [a for a in state.get("hosts", []) if a not in results or results[a].error]
        cluster_state.save(state)
    return [results[h.address] for h in hosts]
