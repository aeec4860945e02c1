"""`up` and `down` over SSH for the whole cluster: every host in parallel, failures kept per host.

``up`` is a sequence of named steps (:data:`UP_STEPS`), each a plain function over one
:class:`UpRun` (the run's state, filled in as the steps go); hosts are worked on at most
``parallel`` at once (``up --parallel N``, default :data:`DEFAULT_PARALLEL`, like Ansible's forks):

1. ``connect_and_probe`` every host (a host that fails is reported, the others go on)
2. ``plan``: decide roles (pinned servers, hosts that already are servers, then the first ones in
   the file), node names (explicit, existing, else hostname, made unique), the gossip
   key (state dir, else a host's config, else new) and the cluster id
3. ``apply`` each host's plan (servers submitted first; running servers whose config changes
   restart one at a time)
4. ``wait_cluster``: a leader and every host an alive member
5. ``record``: the cluster record (KV ``foundation/cluster``) and the local state file.
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

from foundation_cli.core import bootstrap, cluster_state, host_ssh, keys, secure_migration, secure_up, up_verify
from foundation_cli.core.acl import operator_token
from foundation_cli.core.bootstrap import HostPlan, HostResult, Probe
from foundation_cli.core.cluster_config import ClusterConfig, HostConfig, merge_consul
from foundation_cli.core.fanout import for_each, in_context
from foundation_cli.errors import FoundationError, Interrupted, PartialFailure, UnreachableError, internal_error
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
    cacert: str | None = None  # the cluster CA the operator verifies HTTPS with (TLS on)

    @property
    def failed(self) -> list[HostResult]:
        return [h for h in self.hosts if h.error]

    def to_dict(self, error: FoundationError | None = None) -> dict[str, Any]:
        """The ``up --json`` document; ``error``: what made the run exit non-zero (``null`` when it did not)."""
        return {
            "cluster_id": self.cluster_id,
            "datacenter": self.datacenter,
            "http_addr": self.http_addr,
            "hosts": [h.to_dict() for h in self.hosts],
            "removed": self.removed,
            "warnings": self.warnings,
            "error": None
            if error is None
            else {"message": error.message, "hint": error.hint, "exit_status": int(error.exit_status)},
        }


class UpStopped(FoundationError):
    """``up`` stopped before its last step: the error that stopped it, and what the run did until then.

    Carries the error's message, hint and exit status, so it reads the same when nobody unpacks it;
    ``result`` holds every host's steps and errors so far (the table / ``--json`` of a normal run).
    ``cause`` is what was raised: ``error`` itself, or a bug (then ``error`` says "internal error").
    """

    def __init__(self, cause: Exception, result: UpResult) -> None:
        error = cause if isinstance(cause, FoundationError) else internal_error(cause)
        super().__init__(error.message, hint=error.hint, details=error.details)
        self.exit_status = error.exit_status
        self.error, self.cause, self.result = error, cause, result


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
        proxy_jump=s.proxy_jump,
        host_proxy_jump={h.address: h.proxy_jump for h in cfg.hosts if h.proxy_jump},
        sudo_password_env=s.sudo_password_env,
        sudo_password_file=s.sudo_password_file,
    )


def _unique_names(
    hosts: list[HostConfig], probes: dict[str, Probe], warn: Callable[[str, str], None] | None = None
) -> dict[str, str]:
    """Explicit node_name, else the name a host's config already has (if a DNS label), else its hostname — unique."""
    names: dict[str, str] = {}
    for h in hosts:
        p = probes.get(h.address)
        existing = p.existing_config.get("node_name") if p else None
        if h.node_name:
            names[h.address] = h.node_name
        elif isinstance(existing, str) and bootstrap.valid_node_name(existing):
            names[h.address] = existing
        elif existing:  # the host's own file says it: it goes into a unit file and env, so only a DNS label
            (warn or (lambda _a, _t: None))(
                h.address,
                f"ignoring the node_name in its existing Consul config ({ascii(str(existing))[:60]}):"
                " not a DNS label (letters, digits, '-'); using a generated name",
            )
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


RETRY_INTERVAL = "1s"


FAST_GOSSIP = "100ms"
ACL_MODE_LEGACY = "2"  # a Consul server's gossip tag ``acls`` while in legacy ACL mode (1.8: 0 off, 1 on, 2 legacy)


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
    labels: dict[str, str] | None = None,
    fast_gossip: bool = False,
) -> dict[str, Any]:
    """One host's Consul agent config: ours, then the wizard's raw ``consul:`` merged over it.

    ``fast_gossip`` (servers): their LAN and WAN gossip every 100 ms (Consul: 200 / 500 ms; memberlist's
    own profile for a local network). A new leader of a cluster with ACLs announces the ACL mode in
    its gossip tags and waits until that news went round (``UpdateNode``) before it sets up the
    Connect CA, which signs every client's certificate (auto_encrypt): 0.8-1.2 s at the default
    intervals on the lab, 0.4 s at 100 ms. Gossip goes out only when there is news, so an idle
    cluster sends no more for it.
    """
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
        # Consul retries a failed join only every 30 s by default: hosts started together (a fresh
        # `up`) often try before their peers listen, and the cluster then forms 30 s late.
        "retry_interval": RETRY_INTERVAL,
        "disable_update_check": True,
        "leave_on_terminate": not server,
        "log_level": "INFO",
        "node_meta": {**(labels or {}), "foundation_cluster": cluster_id},  # labels: hosts[].labels
        "ports": {k: v for k, v in cfg.ports.items()},
        "performance": {"raft_multiplier": 1},
    }
    if server and bootstrap_expect:
        conf["bootstrap_expect"] = bootstrap_expect
    if server and fast_gossip:
        conf["gossip_lan"] = {"gossip_interval": FAST_GOSSIP}
        conf["gossip_wan"] = {"gossip_interval": FAST_GOSSIP}
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


DEFAULT_PARALLEL = 10  # hosts worked on at once (like Ansible's forks): never 200 SSH sessions at once


@dataclass
class UpRun:
    """Everything one ``up`` knows, filled in step by step: each step reads what the ones before wrote.

    Steps (:data:`UP_STEPS`) are plain functions ``step(run) -> None``; per-host failures go into
    ``results[addr].error`` and the other hosts go on.
    """

    cfg: ClusterConfig
    hosts: list[HostConfig]  # the hosts this run works on (``--host`` narrows ``cfg.hosts``)
    opts: ssh.SSHOptions
    say: Progress
    consul_binary: str | None = None
    only: list[str] | None = None
    join: list[str] | None = None
    wait_timeout: float = 90.0
    parallel: int = DEFAULT_PARALLEL
    dry_run: bool = False
    state: dict[str, Any] = field(default_factory=dict)  # the local state file as it was
    results: dict[str, HostResult] = field(default_factory=dict)
    conns: dict[str, ssh.Connection] = field(default_factory=dict)
    probes: dict[str, Probe] = field(default_factory=dict)
    bundle: Any = None  # agent_bundle.Bundle
    # plan
    gossip: str = ""
    token: str | None = None  # ACL operator token (wizard mode); never rendered
    explicit_token: str | None = None  # --token / CONSUL_HTTP_TOKEN: tried first as the management token
    node_tokens: dict[str, Any] = field(default_factory=dict)  # node -> acl.NodeTokens (secure_up)
    snapshot_token: str | None = None  # servers' snapshot token (secure_up); never on a client
    cacert: str | None = None  # the CA certificate in the state dir (secure_up, TLS on)
    cluster_id: str = ""
    servers: set[str] = field(default_factory=set)
    server_addrs: list[str] = field(default_factory=list)
    plans: dict[str, HostPlan] = field(default_factory=dict)
    # apply / wait
    http_addrs: list[str] = field(default_factory=list)
    formed: bool = False
    acl_bootstrapped: bool = False  # apply ran the ACL step between the servers and the clients
    result: UpResult = field(default_factory=UpResult)
    _binary: dict[str, bytes | None] = field(default_factory=dict)
    _binary_lock: threading.Lock = field(default_factory=threading.Lock)

    def local_binary(self) -> bytes | None:
        """The operator's consul, read only when a host needs it (67 MB), once."""
        with self._binary_lock:
            if "b" not in self._binary:
                self._binary["b"] = _local_binary(self.consul_binary or self.cfg.consul_binary)
            return self._binary["b"]

    def guarded(self, h: HostConfig, fn: Callable[[UpRun, HostConfig], None]) -> None:
        """``fn(run, h)``; an exception fails that host only (recorded, reported), never the run."""
        try:
            fn(self, h)
        except Exception as exc:  # noqa: BLE001 - per host: record and go on with the others
            self.results[h.address].fail(exc)
            self.say(h.address, "failed")

    def each(self, fn: Callable[[UpRun, HostConfig], None], hosts: list[HostConfig]) -> None:
        """``fn`` on every host, at most ``parallel`` at once, each guarded."""
        for_each(hosts, lambda h: self.guarded(h, fn), parallel=self.parallel)

    def close(self) -> None:
        for c in self.conns.values():
            c.close()


# ---------------------------------------------------------------------------------------------
# The steps of `up`, in order


def connect_and_probe(run: UpRun) -> None:
    """SSH to every host and ask what it has (read-only); the agent bundle is built meanwhile."""
    from foundation_cli.core import agent_bundle

    with ThreadPoolExecutor(max_workers=1) as side:
        bundle_future = in_context(side, agent_bundle.build)
        run.each(_connect_probe_host, run.hosts)
        run.bundle = bundle_future.result()


def _connect_probe_host(run: UpRun, h: HostConfig) -> None:
    run.say(h.address, "connecting")
    conn = host_ssh.connect(h.address, run.opts, host_ssh.merge(host_ssh.own(h)))
    run.conns[h.address] = conn
    run.say(h.address, "probing")
    run.probes[h.address] = bootstrap.probe(
        conn, install_root=h.install_root or run.cfg.agent.install_root, python=h.python or run.cfg.agent.python
    )


def _warn(run: UpRun, addr: str, text: str) -> None:
    if addr in run.results:
        run.results[addr].warnings.append(text)
    run.say(addr, "warning: " + text)


def plan(run: UpRun) -> None:
    """Cluster-wide decisions (gossip key, token, cluster id, names, servers), then one plan per host."""
    cfg, probes, state = run.cfg, run.probes, run.state
    gossip = _load_gossip_key() or (cfg.consul.get("encrypt") if isinstance(cfg.consul.get("encrypt"), str) else None)
    if not gossip:
        # A key found on a host is not adopted silently: whoever wrote that file would know the
        # whole cluster's gossip key. The operator adopts it explicitly, or the hosts are reset.
        found = sorted(a for a, p in probes.items() if p.existing_config.get("encrypt"))
        if found:
            raise FoundationError(
                f"{', '.join(found[:3])}{' …' if len(found) > 3 else ''}: already "
                f"{'has' if len(found) == 1 else 'have'} a Consul gossip key that this machine did not make "
                f"(none in {gossip_key_path()}); refusing to make it the whole cluster's key",
                hint="to adopt it, copy it from the host's Consul config into foundation.yaml "
                "(consul: {encrypt: KEY}) or into that file (0600); to start afresh, run "
                "`foundation down --purge` on those hosts first",
            )
    run.gossip = gossip or base64.b64encode(pysecrets.token_bytes(32)).decode()
    run.token = operator_token(cfg, state) if cfg.acl.enabled else None
    secrets.register(run.gossip)
    cluster_id = state.get("cluster_id") if state.get("mode") == "ssh" else None
    run.cluster_id = (
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
    names = _unique_names(all_hosts, probes, warn=lambda addr, text: _warn(run, addr, text))
    run.servers = (
        {h.address for h in all_hosts if h.role == "server"} if run.join else _choose_servers(cfg, all_hosts, probes)
    )
    run.server_addrs = [
        (probes[h.address].addr if h.address in probes else h.address) for h in all_hosts if h.address in run.servers
    ]
    join = run.join or []
    retry_join = run.server_addrs + [a for a in join if a not in run.server_addrs]
    agent_env = dict(cfg.agent.env, **({"CONSUL_HTTP_TOKEN_FILE": bootstrap.AGENT_TOKEN_FILE} if run.token else {}))
    for h in run.hosts:
        if h.address not in probes:
            continue
        p = probes[h.address]
        is_server = h.address in run.servers
        host_plan = HostPlan(
            alias=h.address,
            address=p.addr,
            node_name=names[h.address],
            server=is_server,
            install_root=h.install_root or cfg.agent.install_root,
            python=h.python or cfg.agent.python,
            http_port=cfg.ports.get("http", 8500),
            agent_env=dict(agent_env),
            agent_token=run.token,
            consul_config=consul_config_for(
                cfg,
                node_name=names[h.address],
                address=p.addr,
                server=is_server,
                server_addrs=retry_join,
                gossip_key=run.gossip,
                token=run.token,
                cluster_id=run.cluster_id,
                bootstrap_expect=0 if run.join else len(run.servers),
                labels=h.labels,
                # Not for a server already running without it: that would restart it for nothing.
                fast_gossip=is_server and (not p.consul_running or "gossip_wan" in p.existing_config),
            ),
        )
        run.plans[h.address] = host_plan
        r = run.results[h.address]
        r.node_name, r.role, r.address = host_plan.node_name, "server" if is_server else "client", host_plan.address


def apply(run: UpRun) -> None:
    """Bring each host to its plan: servers first, in parallel; running servers whose config changes
    restart one at a time (quorum kept). The gossip key is kept locally first, then the HTTP address chosen."""
    plans, probes = run.plans, run.probes
    if not run.dry_run:  # kept before any host gets them: an `up` killed half-way finds them when run again
        _save_gossip_key(run.gossip)
        _keep_node_tokens(run)
    ordered = sorted((h for h in run.hosts if h.address in plans), key=lambda h: 0 if plans[h.address].server else 1)
    rolling = [h for h in ordered if plans[h.address].server and _config_changes(probes[h.address], plans[h.address])]
    if run.dry_run:
        secure_migration.dry_run_note(run, rolling)
    if len(rolling) < 2 or run.dry_run:
        rolling = []
    together = [h for h in ordered if h not in rolling]
    servers = [h for h in together if plans[h.address].server]
    clients = [h for h in together if not plans[h.address].server]
    if any(secure_migration.needed(plans[h.address].consul_config, probes[h.address].existing_config) for h in rolling):
        # An open cluster to secure: levels, so no server ever refuses the others' RPC (quorum kept).
        secure_migration.migrate(run, rolling, together, apply_host=_apply_host, set_http_addrs=_set_http_addrs)
    else:
        _warn_single_server(run, ordered)
        if servers and clients and _tokens_before_clients(run, clients):
            _apply_tokens_first(run, servers, clients)
        else:
            run.each(_apply_host, together)
        before = secure_migration.tolerance(run, rolling)[0] if rolling else 0
        for h in secure_migration.order(run, rolling) if rolling else []:
            run.say(h.address, "rolling restart")
            run.guarded(h, _apply_host)
            if not run.results[h.address].error:
                try:
                    secure_migration.wait_after(run, rolling, h, tolerance_before=before, timeout=60)
                except FoundationError as exc:
                    _warn(run, h.address, exc.message)

    _summarize(run)
    _set_http_addrs(run)


def _summarize(run: UpRun) -> None:
    """The run's result so far: every host's report (steps done, error), the cluster's id, removed hosts."""
    cfg, state, result = run.cfg, run.state, run.result
    result.hosts = [run.results[h.address] for h in run.hosts]
    result.cluster_id, result.datacenter, result.token = run.cluster_id, cfg.datacenter, run.token
    result.cacert = run.cacert
    current_addrs = {h.address for h in cfg.hosts}
    result.removed = [a for a in state.get("hosts") or [] if a not in current_addrs]


def _warn_single_server(run: UpRun, ordered: list[HostConfig]) -> None:
    """One running server about to enforce ACLs/TLS it did not: say that the cluster stops meanwhile."""
    running = [h for h in ordered if run.plans[h.address].server and run.probes[h.address].consul_running]
    if len(running) == 1 and not run.dry_run:
        h = running[0]
        if secure_migration.needed(run.plans[h.address].consul_config, run.probes[h.address].existing_config):
            _warn(
                run,
                h.address,
                "the only server restarts to enforce ACLs/TLS: the cluster has no leader until it is back "
                "(quorum cannot be kept with one server)",
            )


def _keep_node_tokens(run: UpRun) -> None:
    """The nodes' ACL tokens (and the cluster id) into the state file before any host gets them.

    The state file is otherwise written by ``record`` at the very end: an ``up`` killed after some
    hosts got their tokens made the next run mint new ones, so every host's Consul config changed,
    every server restarted one at a time and every agent restarted (a 48 s re-run instead of a few
    seconds on the 5-host lab). Only over no state or an SSH cluster's (a local cluster's is left alone).
    """
    if not run.node_tokens:
        return
    current = cluster_state.load() or {}
    if current.get("mode") not in (None, "ssh"):
        return
    kept = {**(current.get("node_tokens") or {}), **{node: t.to_dict() for node, t in run.node_tokens.items()}}
    snapshot = {"snapshot_token": run.snapshot_token} if run.snapshot_token else {}  # the servers' (secure_up)
    if (
        current.get("node_tokens") == kept
        and current.get("cluster_id") == run.cluster_id
        and current.get("snapshot_token") == (run.snapshot_token or current.get("snapshot_token"))
    ):
        return
    cluster_state.save({**current, "mode": "ssh", "cluster_id": run.cluster_id, "node_tokens": kept, **snapshot})


def _apply_tokens_first(run: UpRun, servers: list[HostConfig], clients: list[HostConfig]) -> None:
    """Every host, at most ``parallel`` worked on at once: the servers' Consul first, the clients'
    uploads during the election, and a fresh client's Consul only once the ACL step made its token.

    A fresh client's Consul asks the servers for its TLS certificate (auto_encrypt) with its node
    token; until acl_bootstrap has created that token the servers refuse ("ACL not found") and the
    client backs off 2, 2, 4, 8… s, so a cluster formed seconds after the last host was done. Here
    the ACL step runs as soon as every server's Consul started (its uploads go on meanwhile).

    Clients start their work only when every server's Consul has started: all hosts share the
    operator's CPU and the LAN, and the servers' start is what the election (1–2 s of Raft
    timeouts, the CPU idle) and so everything else waits for. A client waiting for its token holds
    no slot of ``parallel``: the clients behind it upload meanwhile.
    """
    pending = {h.address for h in servers}
    lock = threading.Lock()
    servers_started, tokens_made = threading.Event(), threading.Event()
    slots = threading.BoundedSemaphore(max(1, run.parallel))
    failed: list[BaseException] = []

    def server_started(address: str) -> None:
        with lock:
            pending.discard(address)
            if not pending:
                servers_started.set()

    def make_tokens() -> None:
        servers_started.wait()
        try:
            _refuse_a_cluster_that_cannot_form(run)
            _set_http_addrs(run)
            run.say("cluster", "ACL tokens, while the clients are being set up")
            secure_up.acl_bootstrap(run)
            run.acl_bootstrapped = True
        except BaseException as exc:  # noqa: BLE001 - raised below, as the ACL step would
            failed.append(exc)
        finally:
            tokens_made.set()

    def wait_for_tokens() -> None:
        slots.release()
        try:
            tokens_made.wait(run.wait_timeout)
        finally:
            slots.acquire()

    def one(run: UpRun, h: HostConfig) -> None:
        if run.plans[h.address].server:
            try:
                with slots:
                    _apply_host(run, h, around_consul=(lambda: None, lambda: server_started(h.address)))
            finally:
                server_started(h.address)  # also when it failed before Consul started: never hold the clients
        else:
            servers_started.wait()
            with slots:  # the agent's upload (~2.7 MB, unpacked) goes on while the ACL step runs
                _apply_host(run, h, around_consul=(wait_for_tokens, lambda: None), agent_first=True)

    side = threading.Thread(target=contextvars.copy_context().run, args=(make_tokens,), daemon=True)
    side.start()
    hosts = servers + clients
    interrupted = False
    try:
        # A thread per host, the work bounded by ``slots``: threads that wait hold no slot.
        for_each(hosts, lambda h: run.guarded(h, one), parallel=len(hosts))
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C ends the run now, not once the ACL step found a leader (up to 90 s)
        raise
    finally:
        servers_started.set()
        if not interrupted:
            side.join()
    if failed:
        raise failed[0]


def _tokens_before_clients(run: UpRun, clients: list[HostConfig]) -> bool:
    """ACLs on and a client whose Consul is not running yet (it would start before its token exists)."""
    return secure_up.acl_on(run) and not run.dry_run and any(not run.probes[h.address].consul_running for h in clients)


def acl_bootstrap(run: UpRun) -> None:
    """The ACL step (:func:`secure_up.acl_bootstrap`), unless :func:`apply` already ran it between waves."""
    if not run.acl_bootstrapped:
        _refuse_a_cluster_that_cannot_form(run)
        secure_up.acl_bootstrap(run)


def cannot_form(run: UpRun) -> str | None:
    """Why a *new* cluster cannot elect its first leader, or ``None``.

    Consul's servers of a new cluster wait for all ``bootstrap_expect`` of them before the first
    election: a server host that failed before its Consul started (unreachable, its SSH connection
    lost, …) leaves the others leaderless. Only for a new cluster made by this whole run (no
    ``--host`` / join, no Consul running on any host, no cluster in the state file).
    """
    if run.dry_run or run.only or run.join or run.state.get("consul_http_addr"):
        return None
    if any(p.consul_running for p in run.probes.values()):
        return None
    lost = [
        a
        for a in sorted(run.servers)
        if not any(s.step == "consul" for s in (run.results[a].steps if a in run.results else []))
    ]
    failed = [a for a in lost if a in run.results and run.results[a].error]
    waiting = [a for a in sorted(run.servers) if a not in lost and not run.results[a].error]
    if not failed or not waiting:  # nobody waits for it (every server failed): the host errors say it all
        return None
    why = run.results[failed[0]].error
    return (
        f"the new cluster cannot elect a leader: its {len(run.servers)} servers wait for each other "
        f"(bootstrap_expect) and {', '.join(failed)} failed before its Consul started ({why})"
    )


def _refuse_a_cluster_that_cannot_form(run: UpRun) -> None:
    """Stop at once instead of waiting 90 s for an ACL bootstrap no leader will answer."""
    why = cannot_form(run)
    if why and secure_up.acl_on(run):
        raise PartialFailure(
            why,
            hint="the healthy servers keep waiting for it (bootstrap_expect); once that host is reachable "
            "again, run `foundation up` again: it starts Consul there and the cluster forms",
        )


def _set_http_addrs(run: UpRun) -> None:
    """Where the operator reaches the cluster's HTTP API: the servers that came up, else what is known."""
    state, plans, result = run.state, run.plans, run.result
    ok_servers = [plans[a].address for a in plans if plans[a].server and not run.results[a].error]
    http_addrs = [secure_up.api_url(run, a) for a in ok_servers]
    if not http_addrs and run.only and state.get("mode") == "ssh":  # `up --host CLIENT`: reach the known servers
        http_addrs = state.get("consul_http_addrs") or []
    if not http_addrs and run.join:  # clients of an existing cluster: ask its servers
        http_addrs = [secure_up.api_url(run, run.join[0])]
    run.http_addrs = http_addrs
    if http_addrs:
        result.http_addr = http_addrs[0]


def _apply_host(run: UpRun, h: HostConfig, around_consul=None, *, agent_first: bool = False) -> None:
    from foundation_cli.core import agent_bundle, consul_binary

    arch = run.probes[h.address].arch  # consul and the agent's deps must fit the host (core/consul_binary.py)
    done: list[bootstrap.StepResult] = []
    run.results[h.address].steps = done  # filled as it goes: a host failing half-way shows what changed on it
    bootstrap.apply(
        run.conns[h.address],
        run.probes[h.address],
        run.plans[h.address],
        local_binary=lambda: consul_binary.for_arch(
            arch, local=run.local_binary, per_arch=run.cfg.consul_binaries, alias=h.address
        ),
        bundle=agent_bundle.Selector(run.bundle, wheelhouse=run.cfg.agent.wheelhouse),
        say=lambda msg: run.say(h.address, msg),
        around_consul=around_consul,
        steps=done,
        agent_first=agent_first,
    )
    run.results[h.address].done = True
    run.say(h.address, "done")


def wait_cluster(run: UpRun) -> None:
    """A leader and every host an alive member (a timeout becomes a warning, not an error)."""
    if run.dry_run or not run.http_addrs:
        return
    try:
        run.say("cluster", "waiting for a leader and every member")
        _wait_cluster(run.result, run.plans, run.results, run.cfg, timeout=run.wait_timeout, say=run.say)
        run.formed = True
    except FoundationError as exc:
        run.result.warnings.append(exc.message)


def record(run: UpRun) -> None:
    """The cluster record in KV (once the cluster formed) and the local state file."""
    if run.dry_run or not run.http_addrs:
        return
    if run.formed:
        try:
            run.say("cluster", "writing the cluster record")
            _write_record(run.result, run.cfg, run.server_addrs, run.cluster_id)
        except FoundationError as exc:
            run.result.warnings.append(exc.message)
    cfg, state, result = run.cfg, run.state, run.result
    known = set(state.get("hosts") or [])
    # A new host that failed before anything was done on it (no key, no route) is not part of the cluster.
    untouched = {r.alias for r in result.hosts if r.error and not r.steps and r.alias not in known}
    listed = {h.address for h in cfg.hosts}
    current_addrs = listed - untouched
    cluster_state.save(
        {
            "cluster_id": run.cluster_id,
            "consul_http_addr": result.http_addr,
            "consul_http_addrs": run.http_addrs
            if not run.only
            else sorted(set(run.http_addrs) | set(state.get("consul_http_addrs") or [])),
            "datacenter": cfg.datacenter,
            "mode": "ssh",
            "config_mode": cfg.mode,
            "servers": run.server_addrs,
            "hosts": sorted(current_addrs | set(result.removed)),  # removed ones stay known until `down --host`
            "nodes": {**(state.get("nodes") or {}), **{a: p.node_name for a, p in run.plans.items()}},
            "gossip_key_file": str(gossip_key_path()),
            "token": run.token,
            "node_tokens": {  # per-node secrets (secure_up); nodes this run did not touch keep theirs
                **(state.get("node_tokens") or {}),
                **{node: t.to_dict() for node, t in run.node_tokens.items()},
            },
            "snapshot_token": run.snapshot_token,
            "cacert": run.cacert,
            "ssh": {
                "user": cfg.ssh.user,
                "identity_file": cfg.ssh.identity_file,
                "known_hosts": cfg.ssh.known_hosts,
                "port": cfg.ssh.port,
                "proxy_jump": cfg.ssh.proxy_jump,
                "sudo_password_env": cfg.ssh.sudo_password_env,  # names only: the password is never stored
                "sudo_password_file": cfg.ssh.sudo_password_file,
            },
            "config_path": cfg.source,
            # Per-host SSH settings from foundation.yaml (ssh, logs, exec and down use them; core/host_ssh.py).
            # A host gone from foundation.yaml keeps what it had, so `down` still reaches it (its bastion too).
            "host_ssh": {
                **{a: s for a, s in (state.get("host_ssh") or {}).items() if a not in listed},
                **{h.address: host_ssh.own(h) for h in cfg.hosts if host_ssh.own(h)},
            },
        }
    )


UP_STEPS: tuple[Callable[[UpRun], None], ...] = (
    connect_and_probe,
    plan,
    secure_up.secure_plan,
    apply,
    acl_bootstrap,
    wait_cluster,
    up_verify.verify_hosts,
    record,
)


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
    parallel: int = DEFAULT_PARALLEL,
    token: str | None = None,
) -> UpResult:
    """Bring every host of ``cfg`` to its plan; per-host failures are kept, never raised.

    A step that stops the whole run raises :class:`UpStopped`: its error, and the result so far.

    ``join``: servers of an existing cluster (the ``consul`` strategy's join-only targets): our hosts
    join them as clients (unless pinned ``role: server``) and are never their bootstrap.
    ``parallel``: at most this many hosts worked on at once.
    """
    run = start_up(
        cfg,
        consul_binary=consul_binary,
        accept_new=accept_new,
        only=only,
        prompt=prompt,
        progress=progress,
        wait_timeout=wait_timeout,
        join=join,
        parallel=parallel,
    )
    run.explicit_token = token
    try:
        for step in UP_STEPS:
            step(run)
    except Exception as exc:  # a stop of the whole run (or a bug): what each host got so far goes with it
        _summarize(run)
        raise UpStopped(exc, run.result) from exc
    except KeyboardInterrupt:  # Ctrl-C: the same, taken before the connections close under the running hosts
        _summarize(run)
        for r in run.result.hosts:
            if not r.error and not r.done:  # not reached, or stopped half-way: never "unchanged"
                r.error, r.exit_status = "interrupted before this host was done", int(Interrupted.exit_status)
        raise UpStopped(Interrupted(), run.result) from None
    finally:
        run.close()
    return run.result


def start_up(
    cfg: ClusterConfig,
    *,
    consul_binary: str | None = None,
    accept_new: bool = False,
    only: list[str] | None = None,
    prompt=None,
    progress: Progress | None = None,
    wait_timeout: float = 90.0,
    join: list[str] | None = None,
    parallel: int = DEFAULT_PARALLEL,
) -> UpRun:
    """The run state before the first step: which hosts, how to reach them, what the state file says."""
    if parallel < 1:
        from foundation_cli.errors import UsageError

        raise UsageError(f"--parallel must be at least 1 (got {parallel})")
    hosts = [h for h in cfg.hosts if not only or h.address in only or (h.node_name and h.node_name in only)]
    return UpRun(
        cfg=cfg,
        hosts=hosts,
        opts=ssh_options(cfg, accept_new=accept_new, prompt=prompt),
        say=progress or (lambda _h, _m: None),
        consul_binary=consul_binary,
        only=only,
        join=join,
        wait_timeout=wait_timeout,
        parallel=parallel,
        dry_run=current_recorder().dry_run,
        state=cluster_state.load() or {},
        results={h.address: HostResult(alias=h.address) for h in hosts},
    )


def _config_changes(p: Probe, plan: HostPlan) -> bool:
    """A running Consul whose config will be rewritten (so restarted)."""
    return p.consul_running and p.config is not None and p.config != bootstrap.render_config(plan.consul_config)


def _client(addr: str, token: str | None = None, cacert: str | None = None):
    from foundation_cli.raw.recorder import Recorder
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    quiet = Recorder()
    return consul_tool.connect(Settings(consul_addr=addr, token=token, cacert=cacert), recorder=quiet, timeout=3), quiet


def _wait_cluster(result: UpResult, plans, results, cfg: ClusterConfig, *, timeout: float, say: Progress) -> None:
    """Leader elected, every (non-failed) host an alive member and no server still in Consul's legacy
    ACL mode; agents registered (warn only).

    With ACLs on, a new cluster's follower leaves legacy mode only at its own check, backing off from
    its start (up to ~1.6 s after the election): until then it answers ACL calls with 500 "legacy
    mode", and no client resolves a token. The ACL step itself goes to the leader, so this is where
    `up` waits for the others (their gossip tag ``acls``: "2" is legacy).
    """
    client, quiet = _client(result.http_addr, result.token, result.cacert)
    expected = {plans[a].node_name: a for a in plans if not results[a].error}
    deadline = time.monotonic() + timeout
    missing: set[str] = set(expected)
    legacy: set[str] = set()
    while time.monotonic() < deadline:
        try:
            leader = client.status.leader()
            members = client.agent.members()
        except Exception:  # noqa: BLE001 - still starting
            leader, members = "", []
        alive = {m["Name"] for m in members if m.get("Status") == 1}
        missing = set(expected) - alive
        legacy = {m["Name"] for m in members if (m.get("Tags") or {}).get("acls") == ACL_MODE_LEGACY}
        if leader and not missing and not legacy:
            break
        time.sleep(0.1)  # two small reads a poll; the clients join within a second of their start
    else:
        raise UnreachableError(
            f"cluster not formed after {timeout:.0f} s: "
            + (
                f"not alive: {', '.join(sorted(missing))}"
                if missing
                else f"still in legacy ACL mode: {', '.join(sorted(legacy))}"
                if legacy
                else "no leader"
            )
        )
    if quiet.operations:
        current_recorder().add(quiet.operations[-1])
    # Agents: registered as a Consul service (the agent of issue 4); report, do not fail.
    say("cluster", "waiting for the node agents to register")
    reg_deadline = time.monotonic() + 10
    unregistered = set(expected)
    index = None  # a blocking query: answered as soon as an agent registers, not on the next poll
    while time.monotonic() < reg_deadline and unregistered:
        try:
            index, nodes = client.catalog.service(AGENT_SERVICE, index=index, wait="1s")
        except Exception:  # noqa: BLE001
            index, nodes = None, []
            time.sleep(0.3)
        unregistered = set(expected) - {n.get("Node") for n in nodes}
    for node in sorted(unregistered):
        results[expected[node]].warnings.append(f"node agent not registered as {AGENT_SERVICE!r} yet")


def _write_record(result: UpResult, cfg: ClusterConfig, server_addrs: list[str], cluster_id: str) -> None:
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    client = consul_tool.connect(Settings(consul_addr=result.http_addr, token=result.token, cacert=result.cacert))
    record = {
        "cluster_id": cluster_id,
        "datacenter": cfg.datacenter,
        "mode": cfg.mode,
        "auto_join": cfg.cluster.auto_join,
        "servers": server_addrs,
        "http_addr": result.http_addr,
    }
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
    parallel: int = DEFAULT_PARALLEL,
) -> list[HostResult]:
    """Stop the agent and Consul (after ``consul leave``) on each host; clients first, servers last."""
    parallel_hosts = max(1, parallel)
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
        results[h.address].fail(exc)
        say(h.address, "failed")

    def agent_phase(h: HostConfig) -> None:
        try:
            say(h.address, "connecting")
            # The same SSH settings `up` used: foundation.yaml's host entry, else what the state file kept
            # (a host gone from foundation.yaml keeps its user, port, key and bastion there).
            own = host_ssh.merge(host_ssh.own(h), host_ssh.kept(state, h.address))
            conn = host_ssh.connect(h.address, opts, own)
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
        for_each(batch, fn, parallel=parallel_hosts)

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
        else:  # the servers keep their data, so their ACLs: keep the tokens for the next `up`
            secure_up.keep_after_down(state)
    elif not current_recorder().dry_run and only and state:
        state["hosts"] = [a for a in state.get("hosts", []) if a not in results or results[a].error]
        cluster_state.save(state)
    return [results[h.address] for h in hosts]
