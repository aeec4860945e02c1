"""``foundation agent run``: register the agent, keep its TTL check passing, run the tasks, stop cleanly.

Contract with ``foundation up`` (issue 3): started on every node as
``python3 -m foundation_cli agent run`` with ``CONSUL_HTTP_ADDR`` (the node's
Consul agent) and ``FOUNDATION_NODE`` (its Consul node name).
``FOUNDATION_AGENT_TASKS=placement,config-apply`` runs only the named tasks. Every failure to
reach Consul is retried with backoff — leader elections answer 500, a
restarting local agent refuses connections — and never ends the agent.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time

from foundation_cli.agent import tasks as task_registry
from foundation_cli.agent.context import (
    AgentContext,
    AgentRecorder,
    ExplainLog,
    Soon,
    _short,
    data_root,
    retrying,
)
from foundation_cli.core import keys
from foundation_cli.core.agent_requests import agent_registration
from foundation_cli.core.retry import backoff
from foundation_cli.core.timing import Timing
from foundation_cli.errors import PermissionDeniedError, UnreachableError, UsageError
from foundation_cli.raw.address import ConsulAddress
from foundation_cli.raw.recorder import set_process_recorder
from foundation_cli.raw.secrets import MaskingFilter
from foundation_cli.settings import Settings

# How long a token Consul does not know is retried at short steps (FOUNDATION_AGENT_TOKEN_WAIT): longer
# than Consul's acl.token_ttl (30 s), for which a *client* agent keeps answering "ACL not found" for a
# token it was asked about before the token existed (measured on 1.8.7; a server knows it at once).
TOKEN_WAIT = 40.0


def token_not_made_yet() -> Soon:
    """Consul answers 403 "ACL not found": it does not know the agent's token, for now.

    On a new cluster `up` starts each server's node agent right after its Consul, while the ACL step
    that creates the agent's token (it needs the servers' first leader) comes later: that 403 lasts
    until then (0.3-1.4 s in the lab). Polled every 0.2 s so the agent starts the moment its token
    exists; a token that stays unknown (another cluster's, or deleted) is said once, then backed off.
    """
    source = os.environ.get("CONSUL_HTTP_TOKEN_FILE") or "CONSUL_HTTP_TOKEN"
    try:
        window = float(os.environ.get("FOUNDATION_AGENT_TOKEN_WAIT") or TOKEN_WAIT)
    except ValueError:
        window = TOKEN_WAIT
    return Soon(
        matches=lambda exc: isinstance(exc, PermissionDeniedError) and "ACL not found" in exc.message,
        window=window,
        why_still=f"Consul does not know the agent's ACL token ({source}): not made yet (no leader yet, or "
        "`foundation up` stopped before its ACL step), another cluster's, or deleted; `foundation up` makes and "
        "writes this node's token; retrying with backoff (at most every 5 s)",
    )


CONSUL_START_WAIT = 60.0


def consul_starting(address: str) -> Soon:
    """The local Consul refuses connections: it is starting (or restarting).

    `up` starts the node agent right after its Consul, whose HTTP listener opens only once it has
    its TLS certificate from the servers (a client's auto_encrypt: up to ~1 s on a new cluster,
    whose leader signs only once its Connect CA is set up). Polled every 0.1 s (a refused loopback
    connection costs nothing), so the agent registers the moment Consul listens; backed off 0.25 s,
    0.5 s, 1 s … the agent came up to a second late.
    """
    return Soon(
        matches=lambda exc: isinstance(exc, UnreachableError) and "connection refused" in exc.message,
        window=CONSUL_START_WAIT,
        why_still=f"no Consul agent listens at {address}: is foundation-consul running on this node (its log: "
        "/var/log/foundation/consul.log, or journalctl -u foundation-consul)? retrying with backoff (at most every 5 s)",
        step=0.1,
    )


def wait_listening(address: ConsulAddress, stop: threading.Event, timeout: float = CONSUL_START_WAIT) -> bool:
    """Until something accepts TCP connections at ``address`` (``timeout`` at most); whether it did.

    A bare socket connect every 50 ms: on a new cluster's client the agent starts seconds before its
    Consul listens, and one HTTP try through the client stack costs ~50 times the CPU of a connect
    that is refused (20 such agents share the lab's two cores).
    """
    host = address.host.strip("[]")
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            socket.create_connection((host, address.port), timeout=0.5).close()
            return True
        except OSError:
            stop.wait(0.05)
    return False


JOIN_WAIT = 10.0


def consul_not_joined() -> Soon:
    """Consul answers 403 "Permission denied": on a client that just started, it cannot ask the servers
    about the token yet.

    A client's Consul opens its HTTP API a few milliseconds before it has joined the cluster; until
    then it resolves no token and denies (its default policy). Seen on the 20-host lab: the agent's
    first read came in that gap and the old backoff started it 1.8 s after the join. Polled every
    0.2 s for a short window only: a token that really lacks the right (`agent:read` on this node)
    is said once, then backed off.
    """
    return Soon(
        matches=lambda exc: isinstance(exc, PermissionDeniedError) and "Permission denied" in exc.message,
        window=JOIN_WAIT,
        why_still='the agent\'s token may not read this node\'s agent (`agent "<node>" { policy = "write" }`), or '
        "this node's Consul cannot reach a server to check the token; retrying with backoff (at most every 5 s)",
    )


TASK_JOIN_TIMEOUT = 15.0  # for the tasks that must finish their work on stop (task_registry.FINISH_ON_STOP)
IDLE_TASK_GRACE = 0.5  # the others: their writes are atomic (KV, os.replace); one blocked in a read is left


def setup_logging(node: str | None, verbose: int) -> logging.Logger:
    logger = logging.getLogger("foundation.agent")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s agent[%(node)s] %(message)s"))
        handler.addFilter(MaskingFilter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    _NodeFilter.node = node or "?"
    for h in logger.handlers:
        if not any(isinstance(f, _NodeFilter) for f in h.filters):
            h.addFilter(_NodeFilter())
    return logger


class _NodeFilter(logging.Filter):
    node = "?"

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = _NodeFilter.node
        return True


class Agent:
    def __init__(self, settings: Settings, *, node: str | None = None, explain: bool = False, verbose: int = 0) -> None:
        self.settings = settings
        self.requested_node = node or os.environ.get("FOUNDATION_NODE") or None
        self.stop = threading.Event()
        self.log = setup_logging(self.requested_node, verbose)
        self.recorder = AgentRecorder()
        if explain:
            self.recorder.subscribe(ExplainLog(self.log))
        set_process_recorder(self.recorder)
        self.timing = Timing.from_env()
        self._lock_fd: int | None = None

    def _client(self, timeout: float = 5.0):
        from foundation_cli.tools import consul as consul_tool

        return consul_tool.connect(self.settings, recorder=self.recorder, timeout=timeout, failover=False)

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        self.log.info("connecting to Consul at %s", self.settings.consul_addr)
        wait_listening(self.settings.address, self.stop)
        client = self._client()
        me = retrying(
            client.agent.self,
            self.stop,
            self.log,
            "reading /v1/agent/self",
            soon=(token_not_made_yet(), consul_starting(self.settings.consul_addr or ""), consul_not_joined()),
        )
        if me is None:
            return 0
        consul_node = me["Config"]["NodeName"]
        node = self.requested_node or consul_node
        if node != consul_node:
            raise UsageError(
                f"FOUNDATION_NODE/--node is {node!r} but the Consul agent at {self.settings.consul_addr} is node "
                f"{consul_node!r}",
                hint="point CONSUL_HTTP_ADDR at this node's own Consul agent",
            )
        _NodeFilter.node = node
        meta = dict(me.get("Meta") or {})
        ctx = AgentContext(
            node=node,
            settings=self.settings,
            logger=self.log,
            recorder=self.recorder,
            data_dir=data_root(),
            agent_service_id=keys.agent_service_id(node),
            agent_check_id=keys.agent_check_id(node),
            node_meta=meta,
        )
        self._single_instance(ctx)
        registration = agent_registration(node, self.timing)
        if retrying(lambda: self._register(client, registration), self.stop, self.log, "registering the agent") is None:
            return 0
        self.log.info("registered service %s (data %s)", ctx.agent_service_id, ctx.node_dir())
        threading.Thread(target=self._heartbeat, args=(ctx, registration), daemon=True, name="agent-heartbeat").start()
        threads = []
        only = {t.strip() for t in os.environ.get("FOUNDATION_AGENT_TASKS", "").split(",") if t.strip()}
        for name, spec in list(task_registry.TASKS):
            if only and name not in only:
                continue
            func = task_registry.load(spec)
            thread = threading.Thread(target=self._task, args=(name, func, ctx), daemon=True, name=f"task-{name}")
            thread.start()
            threads.append(thread)
        self.stop.wait()
        self.log.info("stopping (%d tasks)", len(threads))
        # Placement stops its instances and hands singletons over: it gets the whole budget. The other
        # tasks sit in blocking reads (up to 5-60 s) with nothing left to do; waiting for those reads to
        # return made every stop (down, upgrade, up's restart) take seconds for nothing.
        deadline = time.monotonic() + TASK_JOIN_TIMEOUT
        for thread in threads:
            if thread.name.removeprefix("task-") in task_registry.FINISH_ON_STOP:
                thread.join(max(0.1, deadline - time.monotonic()))
        grace = time.monotonic() + IDLE_TASK_GRACE
        for thread in threads:
            thread.join(max(0.0, grace - time.monotonic()))
        try:
            self._client(timeout=2.0).agent.service.deregister(ctx.agent_service_id)
            self.log.info("deregistered %s", ctx.agent_service_id)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("deregister failed: %s", _short(exc))
        return int(ctx.extra.get("exit_code", 0))  # non-zero: a task asked to be restarted (memory_guard)

    def _task(self, name: str, func, ctx: AgentContext) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                func(ctx, self.stop)
                return
            except Exception as exc:  # noqa: BLE001 - a crashing task restarts, the agent stays
                self.log.error("task %s crashed: %s; restarting", name, _short(exc), exc_info=True)
                self.stop.wait(backoff(attempt, base=1.0, cap=30.0))
                attempt += 1

    def _register(self, client, registration: dict) -> bool:
        return client.agent.service.register(registration)

    def _heartbeat(self, ctx: AgentContext, registration: dict) -> None:
        """Keep the agent's TTL check passing; register again if the local Consul forgot it."""
        client = self._client(timeout=self.timing.agent_ttl_pass * 2)
        failures = 0
        while not self.stop.wait(self.timing.agent_ttl_pass):
            try:
                client.agent.check.ttl_pass(ctx.agent_check_id)
                if failures:
                    self.log.info("agent TTL check passing again")
                failures = 0
            except Exception as exc:  # noqa: BLE001
                if failures == 0:
                    self.log.warning("agent TTL pass failed: %s", _short(exc))
                failures += 1
                try:
                    self._register(client, registration)
                except Exception:  # noqa: BLE001
                    pass

    def _single_instance(self, ctx: AgentContext) -> None:
        """Never two agents for one node (two agents would run two copies)."""
        path = ctx.node_dir() / "agent.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise UsageError(
                f"another foundation agent (pid {other or '?'}) is already running for node {ctx.node}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
