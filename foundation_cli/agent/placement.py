"""The agent's placement task: run the singletons this node holds and its replicated instances.

Inputs, each from a blocking query (no polling): the specs under
``foundation/services/`` and the lock keys under ``foundation/locks/``.
One reconciler thread turns them into actions; the session thread
(:mod:`.session`) fences independently of it, so a reconciler stuck on a slow
Consul call can never delay a fence.

Singleton: contend with ``PUT /v1/kv/foundation/locks/<name>?acquire=<session>``
when the key has no holder; the winner starts the process. A refused acquire
of a free key means lock-delay is in force: try again right when it should end
(:func:`~foundation_cli.core.timing.next_acquire`), with the checks that must
come before an acquire (spec still stored, leader's node) made just ahead of
that moment, so nothing but the acquire itself stands between the end of
lock-delay and the new copy. Replicated: every node whose node-meta matches
runs one instance.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from foundation_cli.agent.context import AgentContext, _short
from foundation_cli.agent.session import NodeSession
from foundation_cli.agent.supervisor import Instance, Lease, WarmGuard
from foundation_cli.core import drain, keys
from foundation_cli.core.agent_requests import lock_value, service_registration
from foundation_cli.core.retry import backoff
from foundation_cli.core.service_spec import ServiceSpec
from foundation_cli.core.timing import Timing, next_acquire, session_lock_delay
from foundation_cli.errors import PermissionDeniedError

BLOCKING_WAIT = "60s"
HOLDER_CHECK_INTERVAL = 0.1
PROBE_TIMEOUT = 0.2
PROBE_FAILURES = 2  # a wrong verdict costs a handover, never an overlap (see _watch_holders)
PROBE_RECHECK = 0.05  # a refused connect (nothing listens: Consul died) is probed again this soon
MEMBERS_REFRESH = 1.0  # the local gossip member list, read this often while a foreign holder is watched
# The checks an acquire needs (spec still stored, leader's node) are made this long before the attempt,
# so the acquire at the end of lock-delay goes out with no round trip in front of it; they count as
# current for PREFLIGHT_FRESH.
PREFLIGHT_AHEAD = 0.3
PREFLIGHT_FRESH = 1.0
# At most this many fence guards started ahead (supervisor.WarmGuard) per agent: one per singleton whose
# lock-delay is about to end here, so a node crash that frees many does not start a crowd of them.
WARM_GUARDS_MAX = 4
# The agent on the Raft leader's node lets the others acquire first (see _singleton): the leader's own
# writes are the fastest, so singletons gathered there, and a crash of their node then needs a Raft
# election before anyone can take over (≈ 6 s instead of ≈ 3 s, docs/reliability.md).
LEADER_HANDICAP = 0.3
# An exit with a non-zero status within this many seconds of the start counts as a quick failure.
QUICK_EXIT_SECONDS = 30.0
SERF_LEFT, SERF_FAILED = 3, 4


def restart_delay(attempt: int) -> float:
    """Restart backoff: 0.5 s, 1 s, 2 s … capped at 30 s (cluster-wide restart.backoff / restart.backoff_max)."""
    from foundation_cli.core.live_settings import LIVE

    first = float(LIVE.get("restart.backoff", 0.5))
    cap = float(LIVE.get("restart.backoff_max", 30.0))
    return min(cap, first * (2 ** min(attempt, 10)))


class Placement:
    def __init__(self, ctx: AgentContext, stop: threading.Event, timing: Timing | None = None) -> None:
        self.ctx = ctx
        self.log = ctx.logger
        self.stop = stop
        self.timing = timing or Timing.from_env()
        self.wake = threading.Event()
        self.lock = threading.RLock()  # reconciler state
        self.spawn_lock = threading.Lock()  # spawn vs. fence
        self.specs: dict[str, ServiceSpec] = {}
        self.specs_loaded = False
        self.holders: dict[str, str | None] = {}  # lock name -> session holding it
        self.instances: dict[str, Instance] = {}
        self.held: set[str] = set()
        self.tokens: dict[str, int] = {}  # singleton -> fencing token (lock ModifyIndex at our acquire)
        self.drain_mark: dict | None = None  # foundation/drain/<this node>, when drained
        self.maintenance: bool | None = None  # the node maintenance we last set (None: not yet checked)
        self.restart_at: dict[str, float] = {}
        self.acquire_at: dict[str, float] = {}  # lock name -> the next acquire attempt (monotonic)
        self.free_since: dict[str, float] = {}  # lock name -> when its lock-delay started, as far as we know
        self.preflight: dict[str, tuple[float, bool, bool]] = {}  # lock name -> (checked at, on leader, spec ok)
        self.warm: dict[str, WarmGuard] = {}  # lock name -> a fence guard started ahead of its acquire
        self._self_addr: str | None = None
        self.registered: dict[str, str] = {}  # name -> digest registered
        self.status_sent: dict[str, str] = {}
        self.session_retry_at = 0.0
        self.next_housekeeping = 0.0
        self.services_dir = ctx.node_dir() / "services"
        self.session = NodeSession(
            ctx,
            self.timing,
            on_fence=self._fence,
            on_lost=self._session_lost,
            on_confirmed=self.wake.set,
            on_renewed=self._renew_leases,
        )
        self.client = ctx.consul(timeout=5.0)

    # ================================================================ threads
    def run(self) -> None:
        self._read_drain_once()
        self._adopt()
        self._destroy_stale_sessions()
        for name, target in (
            ("specs", lambda: self._watch(keys.SERVICES, self._apply_specs)),
            ("locks", lambda: self._watch(keys.LOCKS, self._apply_locks)),
            ("session", lambda: self.session.run(self.stop)),
            ("stop", lambda: (self.stop.wait(), self.wake.set())),
            ("holders", self._watch_holders),
            ("drain", lambda: self._watch(keys.DRAIN, self._apply_drain)),
        ):
            threading.Thread(target=target, daemon=True, name=f"placement-{name}").start()
        while not self.stop.is_set():
            try:
                timeout = self._reconcile()
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything Consul does
                self.log.warning("placement: %s; retrying", _short(exc))
                timeout = 1.0
            self.wake.wait(timeout)
            self.wake.clear()
        self._shutdown()

    def _watch(self, prefix: str, apply) -> None:
        client = self.ctx.consul(timeout=10.0)
        index = None
        attempt = 0
        while not self.stop.is_set():
            try:
                # ?stale: answered by the nearest server, so a watch never hangs on a connection to a
                # leader that just died or was partitioned; decisions are re-checked by writes and
                # consistent reads (acquire, _still_ours). The first read, and the one after the index
                # went backwards, is ?consistent: a server that just restarted answers ?stale from its
                # old state for a moment (a service stopped minutes ago would come back briefly).
                if index is None:
                    new_index, data = client.kv.get(prefix, recurse=True, consistency="consistent")
                else:
                    new_index, data = client.kv.get(
                        prefix, recurse=True, index=index, wait=BLOCKING_WAIT, consistency="stale"
                    )
                attempt = 0
            except Exception as exc:  # noqa: BLE001
                if attempt == 0:
                    self.log.warning("watch %s: %s; retrying", prefix, _short(exc))
                self.stop.wait(backoff(attempt))
                attempt += 1
                continue
            new_index = int(new_index)
            if index is not None and new_index < int(index):
                index = None  # this server is behind what we saw (or a snapshot was restored): ask the leader
                continue
            index = new_index
            apply(data or [])
            self.wake.set()

    def _watch_holders(self) -> None:
        """Destroy the session of a holder whose node looks dead from here, to take over sooner.

        Safety never depends on this detector: lock-delay starts at the
        destroy, which comes after the holder's last confirmation, so the
        holder has fenced itself before anyone may acquire (see timing.py). A
        wrong verdict costs a handover, never an overlap. Hence it may be fast:

        - gossip: the local member list (no server round trip) says ``failed``;
        - reachability: a TCP connect to the holder node's Serf LAN port (the
          gossip port every Consul agent listens on, on its LAN address, with
          or without TLS; the HTTP API is on loopback in a cluster made by
          ``up``), every 0.1 s, fails ``PROBE_FAILURES`` times in a row — used
          only for nodes where it has succeeded before. A refused connect (the
          host answers, nothing listens: its Consul died with it) is probed
          again 0.05 s later; a timeout (host gone or cut off) waits for the next tick. A
          connect needs only the holder's kernel, so a stalled but live Consul
          still passes.

        The servers would invalidate the session on their own once the leader
        processes the node's failure; after a leader change that can lag
        gossip by tens of seconds. After its destroy this agent knows when the
        lock-delay started (by the destroy's answer) and how long it is (the
        holder session's ``LockDelay``): its next acquire goes out when it ends.
        The only periodic work of the agent apart from fencing, and only while
        another node holds a singleton this node could run.
        """
        client = self.ctx.consul(timeout=2.0)
        session_nodes: dict[str, tuple[str | None, float]] = {}  # session -> (node, its lock-delay)
        destroyed: set[str] = set()
        announced: set[str] = set()  # sessions whose destroy was logged
        reachable_once: set[str] = set()
        failures: dict[str, int] = {}
        members: dict[str, tuple[int, str, int]] = {}  # node -> (serf status, address, serf port)
        members_due = 0.0
        wait = HOLDER_CHECK_INTERVAL
        while not self.stop.wait(wait):
            wait = HOLDER_CHECK_INTERVAL
            sid = self.session.id
            specs = self.specs
            foreign = {
                holder
                for name, holder in list(self.holders.items())
                if holder
                and holder != sid
                and holder not in destroyed
                and name in specs
                and specs[name].mode == "singleton"
                and self._eligible(specs[name])
            }
            if not foreign:
                failures.clear()
                continue
            try:
                if time.monotonic() >= members_due or not members:
                    members = {
                        m["Name"]: (m["Status"], m["Addr"], int(m.get("Port") or 0)) for m in client.agent.members()
                    }
                    members_due = time.monotonic() + MEMBERS_REFRESH
                for holder in foreign:
                    if holder not in session_nodes:
                        _i, info = client.session.info(holder)
                        delay = session_lock_delay(info, self.session.timing.lock_delay)
                        session_nodes[holder] = ((info or {}).get("Node"), delay)
                    node, holder_delay = session_nodes[holder]
                    if not node or node == self.ctx.node:
                        continue
                    status, addr, port = members.get(node, (None, None, 0))
                    verdict = None
                    if status in (SERF_LEFT, SERF_FAILED):
                        verdict = "failed in gossip"
                    elif addr and port:
                        probe = _probe(addr, port, PROBE_TIMEOUT)
                        if probe == "ok":
                            reachable_once.add(node)
                            failures[node] = 0
                        elif node in reachable_once:
                            failures[node] = failures.get(node, 0) + 1
                            if failures[node] >= PROBE_FAILURES:
                                verdict = f"gossip port {addr}:{port} unreachable {failures[node]} times"
                            elif probe == "refused":
                                wait = PROBE_RECHECK
                    if verdict and self.session.confirmed():
                        if holder not in announced:  # once: with no leader the destroy fails, retried each tick
                            announced.add(holder)
                            self.log.warning("holder node %s %s: destroying its session %s", node, verdict, holder)
                        try:
                            client.session.destroy(holder)
                        except PermissionDeniedError:
                            # A token made before agents could destroy other nodes' sessions (core/acl.py
                            # agent_rules; the next `up` updates the policy): the servers invalidate this
                            # one when they see the node fail. Said once, not retried every probe.
                            self.log.warning("not allowed to destroy %s (ACL): left to the servers", holder)
                            destroyed.add(holder)
                            failures.pop(node, None)
                            continue
                        # The leader applied the destroy (and started lock-delay) before it answered:
                        # now is a bound on that start that is never early, and late by half a round
                        # trip at most (a destroy held up by a Raft election answers only after it).
                        answered = time.monotonic()
                        destroyed.add(holder)
                        failures.pop(node, None)
                        for name, h in list(self.holders.items()):
                            if h == holder:
                                # Lock-delay started by then (earlier if another agent's destroy came
                                # first and our watch saw it): the next acquire goes out when it should
                                # end; a refusal then retries every acquire_retry.
                                since = min(self.free_since.get(name, answered), answered)
                                self.free_since[name] = since
                                self.acquire_at[name] = since + holder_delay
                                self.holders[name] = None
                        self.wake.set()
            except Exception as exc:  # noqa: BLE001
                self.log.debug("holder check: %s", _short(exc))

    def _apply_specs(self, items: list[dict]) -> None:
        specs: dict[str, ServiceSpec] = {}
        for item in items:
            name = item["Key"][len(keys.SERVICES) :]
            if not name or "/" in name or item.get("Value") is None:
                continue
            try:
                specs[name] = ServiceSpec.from_json(item["Value"]).validate()
            except Exception as exc:  # noqa: BLE001
                self.log.warning("ignoring malformed spec %s: %s", name, _short(exc))
        with self.lock:
            self.specs = specs
            self.specs_loaded = True

    # ================================================================ drain (core/drain.py)
    def _eligible(self, spec: ServiceSpec) -> bool:
        """Placed on this node: its node meta matches and the node is not drained."""
        return self.drain_mark is None and spec.eligible(self.ctx.node_meta)

    def _apply_drain(self, items: list[dict]) -> None:
        mark = next((i for i in items if i["Key"] == drain.mark_key(self.ctx.node)), None)
        was = self.drain_mark is not None
        self.drain_mark = drain.parse_mark(mark.get("Value")) if mark is not None else None
        if was != (self.drain_mark is not None):
            self.log.warning("node %s: %s", self.ctx.node, "drained" if self.drain_mark is not None else "undrained")

    def _read_drain_once(self) -> None:
        """At start, before adopting anything: a drained node keeps nothing from its previous run."""
        attempt = 0
        while not self.stop.is_set():
            try:
                _i, items = self.client.kv.get(keys.DRAIN, recurse=True)
                self._apply_drain(items or [])
                return
            except Exception:  # noqa: BLE001
                self.stop.wait(backoff(attempt))
                attempt += 1

    def _sync_maintenance(self) -> None:
        """Node maintenance follows the drain mark (after the instances have stopped)."""
        want = self.drain_mark is not None
        if self.maintenance == want:
            return
        try:
            if want:
                drain.set_maintenance(self.client, True, drain.maintenance_reason(self.drain_mark))
            elif self.maintenance is True or drain.ours_in_maintenance(self.client):
                drain.set_maintenance(self.client, False, "")
            self.maintenance = want
            self.log.info("node maintenance %s", "enabled (drained)" if want else "off")
        except Exception as exc:  # noqa: BLE001 - retried at the next pass
            self.log.warning("node maintenance: %s; retrying", _short(exc))

    def _apply_locks(self, items: list[dict]) -> None:
        holders = {}
        for item in items:
            name = item["Key"][len(keys.LOCKS) :]
            if name and "/" not in name:
                holders[name] = item.get("Session")
        self.holders = holders

    # ================================================================ fencing (session thread)
    def _singletons(self) -> list[Instance]:
        return [i for i in list(self.instances.values()) if i.mode == "singleton"]

    def _kill_singletons(self, why: str) -> None:
        with self.spawn_lock:
            victims = [i for i in self._singletons() if i.state == "running"]
            threads = [
                threading.Thread(target=i.terminate, args=(self.timing.fence_kill_grace,), daemon=True) for i in victims
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for inst in victims:
                inst.state = "fenced"
                self.log.warning("%s stopped (%s)", inst.name, why)
        self.wake.set()

    def _fence(self) -> None:
        self._kill_singletons("fenced: session not confirmed")

    def _session_lost(self) -> None:
        self._kill_singletons("session invalidated: lock lost")
        with self.lock:
            self.held.clear()
        self.wake.set()

    def _renew_leases(self, deadline: float) -> None:
        """Session confirmed (session thread): extend every singleton's fence-guard lease to ``deadline``."""
        for inst in self._singletons():
            inst.renew(deadline)

    # ================================================================ reconcile
    def _reconcile(self) -> float:
        """One pass; returns how long to sleep at most before the next."""
        now = time.monotonic()
        if not self.specs_loaded:
            return 1.0
        timers: list[float] = []
        with self.lock:
            if self.session.id is None and now >= self.session_retry_at and not self.stop.is_set():
                self._create_session()
            for name in list(self.instances):
                spec = self.specs.get(name)
                inst = self.instances[name]
                if spec is None or spec.mode != inst.mode or not self._eligible(spec):
                    self._remove(
                        name, graceful=True, reason="spec removed" if spec is None else "no longer placed here"
                    )
            for name in list(self.held):
                spec = self.specs.get(name)
                if spec is None or spec.mode != "singleton" or not self._eligible(spec):
                    self._release(name)
            for _name, spec in sorted(self.specs.items()):
                if not self._eligible(spec):
                    continue
                if spec.mode == "replicated":
                    self._ensure_running(spec, timers)
                else:
                    self._singleton(spec, timers)
            self._drop_warm(set(self.acquire_at))
            for name in [n for n in self.status_sent if n not in self.instances]:
                self._delete_status(name)
            self._sync_maintenance()
            if self.maintenance != (self.drain_mark is not None):
                timers.append(now + 1.0)
            if now >= self.next_housekeeping:
                self._housekeeping()
                self.next_housekeeping = now + self.timing.housekeeping
            timers.append(self.next_housekeeping)
            if self.session.id is None:
                timers.append(self.session_retry_at)
        wait = min(timers) - time.monotonic() if timers else self.timing.housekeeping
        return max(0.02, min(wait, self.timing.housekeeping))

    def _create_session(self) -> None:
        try:
            self.session.create(self.client)
        except Exception as exc:  # noqa: BLE001 - no leader / check not yet synced: retry soon
            self.log.warning("session create failed: %s; retrying", _short(exc))
            self.session_retry_at = time.monotonic() + 1.0

    def _singleton(self, spec: ServiceSpec, timers: list[float]) -> None:
        name = spec.name
        sid = self.session.id
        now = time.monotonic()
        if name in self.held:
            holder = self.holders.get(name, sid)
            if holder != sid and not self._still_ours(name):
                self.log.warning("%s: lock no longer ours (holder %s)", name, holder)
                self.held.discard(name)
                self._remove(name, graceful=False, reason="lock lost")
                return
            if not self.session.confirmed(within=self.session.timing.fence_timeout / 2):
                return  # fenced or not yet re-confirmed: the session thread wakes us
            self._ensure_running(spec, timers)
            return
        inst = self.instances.get(name)
        if inst is not None:
            self._remove(name, graceful=False, reason="not the lock holder")
        if self.holders.get(name):
            self._forget_free(name)
        if sid is None or not self.session.confirmed() or self.holders.get(name):
            return
        lock_delay = self.session.timing.lock_delay
        free_since = self.free_since.setdefault(name, now)
        attempt_at = self.acquire_at.setdefault(name, now)
        if now < attempt_at - PREFLIGHT_AHEAD:
            timers.append(self._wake_for(name, attempt_at))
            return
        check = self.preflight.get(name)
        if check is None or now - check[0] > PREFLIGHT_FRESH:
            check = self.preflight[name] = (now, self._on_leader_node(), self._spec_current(spec))
        now = time.monotonic()
        if now < attempt_at:  # checked ahead: at attempt_at the acquire goes out with nothing before it
            if check[2] and not check[1] and attempt_at >= free_since + lock_delay - 0.01:
                self._warm_up(spec)  # the attempt at the end of lock-delay (not a slow retry before it)
            timers.append(attempt_at)
            return
        _checked, on_leader, spec_ok = check
        leader_turn = free_since + lock_delay + LEADER_HANDICAP
        if on_leader and now < leader_turn:
            self.acquire_at[name] = leader_turn  # the others first: lock-delay ends for all at once
            timers.append(self._wake_for(name, leader_turn))
            return
        if not spec_ok:  # our watch reads ?stale: never start from a spec already deleted
            self.preflight.pop(name, None)
            self.acquire_at[name] = now + 1.0
            timers.append(self._wake_for(name, now + 1.0))
            return
        sent = time.monotonic()
        try:
            ok = self.client.kv.acquire(keys.LOCKS + name, lock_value(self.ctx.node), sid)
        except Exception as exc:  # noqa: BLE001
            self.log.debug("acquire %s: %s", name, _short(exc))
            ok = False
        if ok:
            self.session.mark_confirmed(sent)
            self.held.add(name)
            self.holders[name] = sid
            self._forget_free(name)
            self.tokens.pop(name, None)
            self._fencing_token(name)
            self.log.info("%s: lock acquired (fencing token %s)", name, self.tokens.get(name))
            self._ensure_running(spec, timers)
        else:
            self.acquire_at[name] = next_acquire(time.monotonic(), free_since, lock_delay, self.timing)
            timers.append(self._wake_for(name, self.acquire_at[name]))

    def _warm_up(self, spec: ServiceSpec) -> None:
        """Start its fence guard now (lock-delay ends within PREFLIGHT_AHEAD): its start-up is then off the
        takeover's path. It starts nothing until the acquire succeeds (:meth:`_spawn`)."""
        if spec.name in self.warm or len(self.warm) >= WARM_GUARDS_MAX:
            return
        try:
            self.warm[spec.name] = WarmGuard(spec, self.services_dir / spec.name)
        except OSError as exc:  # the spawn will say so (and start its guard then)
            self.log.debug("%s: no warm fence guard: %s", spec.name, _short(exc))

    def _drop_warm(self, keep: set[str]) -> None:
        """Discard the warm guards of locks no longer being contended here."""
        for name in [n for n in self.warm if n not in keep]:
            self.warm.pop(name).discard()

    def _wake_for(self, name: str, attempt_at: float) -> float:
        """When the reconciler must wake for an attempt at ``attempt_at``: PREFLIGHT_AHEAD before it if its
        checks will be stale by then or its fence guard is still to be started ahead (the attempt at the
        end of lock-delay); else at the attempt itself."""
        check = self.preflight.get(name)
        end = self.free_since.get(name, attempt_at) + self.session.timing.lock_delay
        warm_due = name not in self.warm and attempt_at >= end - 0.01
        if check is not None and attempt_at - check[0] <= PREFLIGHT_FRESH and not warm_due:
            return attempt_at
        return attempt_at - PREFLIGHT_AHEAD

    def _forget_free(self, name: str) -> None:
        """The lock has a holder again (or is ours): its free-lock bookkeeping starts over next time."""
        self.free_since.pop(name, None)
        self.acquire_at.pop(name, None)
        self.preflight.pop(name, None)

    def _on_leader_node(self) -> bool:
        """Whether this node's Consul is the Raft leader (``/v1/status/leader`` vs our member address)
        and another node has a live agent (alone, there is nobody to let go first)."""
        try:
            if self._self_addr is None:
                self._self_addr = str(self.client.agent.self()["Member"]["Addr"])
            leader = self.client.status.leader() or ""
            if not leader or leader.rsplit(":", 1)[0] != self._self_addr:
                return False
            _i, agents = self.client.health.service(keys.AGENT_SERVICE, passing=True)
        except Exception as exc:  # noqa: BLE001 - cannot tell: no handicap
            self.log.debug("leader check: %s", _short(exc))
            return False
        return any((a.get("Node") or {}).get("Node") != self.ctx.node for a in agents or [])

    def _spec_current(self, spec: ServiceSpec) -> bool:
        """Whether ``spec`` is still the stored one, by a consistent read. A server that just restarted
        answers the ``?stale`` watch from its old state for a moment: a service stopped minutes ago
        would otherwise be acquired and started again, briefly (seen in the fault campaign)."""
        try:
            _i, data = self.client.kv.get(keys.SERVICES + spec.name, consistency="consistent")
            stored = ServiceSpec.from_json(data["Value"]) if data and data.get("Value") is not None else None
        except Exception as exc:  # noqa: BLE001 - cannot tell (no leader…): not now
            self.log.debug("spec %s: %s", spec.name, _short(exc))
            return False
        return stored is not None and stored.digest() == spec.digest()

    def _still_ours(self, name: str) -> bool:
        """Consistent read of the lock key: the watch may lag behind our own acquire."""
        try:
            _i, data = self.client.kv.get(keys.LOCKS + name, consistency="consistent")
        except Exception:  # noqa: BLE001 - cannot tell: keep it (fencing covers a partition)
            return True
        holder = (data or {}).get("Session")
        self.holders[name] = holder
        return holder is not None and holder == self.session.id

    def _fencing_token(self, name: str) -> int | None:
        """The lock key's ModifyIndex as of our acquire (consistent read): the Raft index of that write.

        Raft indexes only grow, cluster-wide, so every new holder gets a larger
        number than every earlier one — even after ``foundation stop`` deleted
        the key and a later start re-created it (its LockIndex would restart at 1).
        """
        if name in self.tokens:
            return self.tokens[name]
        try:
            _i, data = self.client.kv.get(keys.LOCKS + name, consistency="consistent")
        except Exception as exc:  # noqa: BLE001 - no token yet: the spawn waits for the next pass
            self.log.debug("fencing token %s: %s", name, _short(exc))
            return None
        if data and data.get("Session") == self.session.id and self.session.id:
            self.tokens[name] = int(data["ModifyIndex"])
            return self.tokens[name]
        return None

    def _release(self, name: str) -> None:
        self.held.discard(name)
        sid = self.session.id
        if sid:
            try:
                self.client.kv.release(keys.LOCKS + name, lock_value(self.ctx.node), sid)
            except Exception as exc:  # noqa: BLE001
                self.log.warning("release %s: %s", name, _short(exc))

    # ---------------------------------------------------------------- instances
    def _ensure_running(self, spec: ServiceSpec, timers: list[float]) -> None:
        name = spec.name
        inst = self.instances.get(name)
        now = time.monotonic()
        if inst is not None and inst.digest != spec.digest():
            self.log.info("%s: spec changed (generation %d): restarting", name, spec.generation)
            restarts = inst.restarts
            inst.terminate(self.timing.stop_grace)
            inst = self._new_instance(spec)
            inst.restarts = restarts
        if inst is None:
            inst = self._new_instance(spec)
        if inst.state == "running":
            if inst.alive():
                if self.registered.get(name) != inst.digest:
                    self._register(spec)
                self._report(inst)
            return  # (not alive: its waiter thread reports the exit and wakes us)
        if inst.state in ("exited", "failed", "backoff"):
            policy = spec.restart
            if policy == "never" or (policy == "on-failure" and inst.exit_code == 0):
                self._report(inst)
                return
            due = self.restart_at.get(name, 0.0)
            if now < due:
                inst.state = "backoff"
                self._report(inst)
                timers.append(due)
                return
            inst.restarts += 1
        self._spawn(inst, spec)

    def _new_instance(self, spec: ServiceSpec) -> Instance:
        inst = Instance(spec, self.services_dir / spec.name, self.ctx.node)
        self.instances[spec.name] = inst
        return inst

    def _spawn(self, inst: Instance, spec: ServiceSpec) -> None:
        extra = {"FOUNDATION_SERVICE": spec.name, "FOUNDATION_NODE": self.ctx.node, "FOUNDATION_MODE": spec.mode}
        if spec.port:
            extra["PORT"] = str(spec.port)
        if spec.mode == "singleton":
            token = self._fencing_token(spec.name)
            if token is None:  # cannot tell our token yet: no process without one; try again shortly
                threading.Timer(0.5, self.wake.set).start()
                return
            extra["FOUNDATION_FENCING_TOKEN"] = str(token)
        with self.spawn_lock:
            if spec.mode == "singleton" and not self.session.confirmed(within=self.session.timing.fence_timeout / 2):
                return
            lease = None
            if spec.mode == "singleton":  # the guard stops it at the same deadline as our own fence
                t = self.session.timing
                lease = Lease(self.session.last_confirmed + t.fence_timeout, t.fence_kill_grace)
            try:
                inst.spawn(extra, self._on_exit, lease, self.warm.pop(spec.name, None) if lease else None)
            except OSError as exc:
                inst.state, inst.error, inst.exit_code = "failed", f"cannot execute: {exc.strerror}", 127
                self.restart_at[spec.name] = time.monotonic() + restart_delay(inst.restarts)
                self.log.warning("%s: %s", spec.name, inst.error)
                self._report(inst)
                return
        self.log.info("%s: started pid %d (%s)", spec.name, inst.pid, spec.mode)
        if inst.disk_error:
            self.log.warning(
                "%s: %s (it runs; retried every %.0fs)", spec.name, inst.disk_error, self.timing.housekeeping
            )
        self._register(spec)
        self._report(inst)

    def _on_exit(self, inst: Instance) -> None:
        """Exit of a process (waiter thread): decide the restart time, wake the reconciler."""
        if inst.stopping:
            return
        fenced = inst.fence_fired() if inst.mode == "singleton" else None
        if fenced:
            # Its guard stopped it: the lease ran out (this agent was frozen or cut off) or the agent
            # went away. Not a failure: it runs again once the session is confirmed and the lock ours.
            inst.state = "fenced"
            self.log.warning("%s: pid %s stopped by its fence guard (%s)", inst.name, inst.pid, fenced)
            self.wake.set()
            return
        ran = time.monotonic() - inst.started_mono
        attempt = 0 if ran > QUICK_EXIT_SECONDS else inst.restarts
        inst.state = "exited" if inst.exit_code == 0 else "failed"
        # `start-singleton` & co. report a command that keeps exiting once it failed twice in a row.
        quick_failure = inst.exit_code not in (0, None) and ran <= QUICK_EXIT_SECONDS
        inst.failures = inst.failures + 1 if quick_failure else 0
        inst.last_output = inst.tail_output()
        self.restart_at[inst.name] = time.monotonic() + restart_delay(attempt)
        self.log.warning("%s: pid %s exited with %s after %.1fs", inst.name, inst.pid, inst.exit_code, ran)
        try:
            self.client.agent.check.ttl_fail(f"foundation:{inst.name}", notes=f"exited with {inst.exit_code}")
        except Exception:  # noqa: BLE001
            pass
        self.wake.set()

    def _remove(self, name: str, *, graceful: bool, reason: str) -> None:
        inst = self.instances.pop(name, None)
        if inst is not None:
            inst.terminate(self.timing.stop_grace if graceful else self.timing.fence_kill_grace)
            self.log.info("%s: stopped (%s)", name, reason)
        if name in self.held:
            self._release(name)
        self.restart_at.pop(name, None)
        self._deregister(name)
        self._delete_status(name)

    # ---------------------------------------------------------------- consul side effects
    def _register(self, spec: ServiceSpec) -> None:
        body = service_registration(spec, self.ctx.node, self.timing)
        try:
            self.client.agent.service.register(body)
            self.registered[spec.name] = spec.digest()
        except Exception as exc:  # noqa: BLE001
            self.log.warning("register %s: %s", spec.name, _short(exc))

    def _deregister(self, name: str) -> None:
        if self.registered.pop(name, None) is None:
            return
        try:
            self.client.agent.service.deregister(name)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("deregister %s: %s", name, _short(exc))

    def _report(self, inst: Instance) -> None:
        status = inst.status()
        if inst.mode == "singleton":
            status["fencing"] = self.tokens.get(inst.name)
        text = json.dumps(status, sort_keys=True)
        if self.status_sent.get(inst.name) == text:
            return
        try:
            self.client.kv.put(f"{keys.STATUS}{inst.name}/{self.ctx.node}", text)
            self.status_sent[inst.name] = text
        except Exception as exc:  # noqa: BLE001
            self.log.debug("status %s: %s", inst.name, _short(exc))

    def _delete_status(self, name: str) -> None:
        try:
            self.client.kv.delete(f"{keys.STATUS}{name}/{self.ctx.node}")
            self.status_sent.pop(name, None)
        except Exception as exc:  # noqa: BLE001
            self.log.debug("status delete %s: %s", name, _short(exc))

    def _housekeeping(self) -> None:
        self._refresh_node_meta()
        for name, inst in list(self.instances.items()):
            if inst.state == "running" and name in self.registered:
                try:
                    self.client.agent.check.ttl_pass(f"foundation:{name}")
                except Exception as exc:  # noqa: BLE001 - e.g. the local Consul lost its state: register again
                    self.log.debug("ttl pass %s: %s", name, _short(exc))
                    self.registered.pop(name, None)
            try:
                inst.rotate_log()
            except OSError:
                pass
            if inst.disk_error and inst.state == "running" and inst.try_save():
                self.log.info("%s: %s writable again", name, inst.meta_path)
                self._report(inst)

    def _refresh_node_meta(self) -> None:
        """Node meta (foundation.yaml labels) changes when `up` restarts Consul with new labels: follow it."""
        try:
            meta = dict((self.client.agent.self() or {}).get("Meta") or {})
        except Exception as exc:  # noqa: BLE001 - keep the last known meta
            self.log.debug("node meta: %s", _short(exc))
            return
        if meta != self.ctx.node_meta:
            self.log.info("node meta now %s", meta)
            self.ctx.node_meta = meta
            self.wake.set()

    # ---------------------------------------------------------------- adopt / shutdown
    def _adopt(self) -> None:
        """Agent restart: keep live replicated instances we started; stop anything else we find."""
        if not self.services_dir.exists():
            return
        specs = self._read_specs_once()
        for directory in sorted(p for p in self.services_dir.iterdir() if p.is_dir()):
            spec = specs.get(directory.name)
            inst, meta = Instance.load(spec, directory, self.ctx.node)
            if inst is None:
                if meta:
                    (directory / "instance.json").unlink(missing_ok=True)
                continue
            keep = (
                spec is not None
                and spec.mode == "replicated"
                and inst.mode == "replicated"
                and inst.digest == spec.digest()
                and self._eligible(spec)
            )
            if keep:
                self.instances[inst.name] = inst
                inst.watch_adopted(self._on_exit)
                self.log.info("%s: adopted pid %d from the previous agent run", inst.name, inst.pid)
            else:
                self.log.info("%s: stopping pid %d left by the previous agent run", directory.name, inst.pid)
                inst.terminate(self.timing.stop_grace)

    def _destroy_stale_sessions(self) -> None:
        """Sessions of a previous agent run on this node (same name) would hold its locks forever:
        the new run re-registers the same TTL check, so they never turn critical on their own."""
        from foundation_cli.agent.session import session_body

        name = session_body(self.ctx.node, self.timing)["Name"]
        attempt = 0
        while not self.stop.is_set():
            try:
                _i, sessions = self.client.session.node(self.ctx.node)
                for item in sessions or []:
                    if item.get("Name") == name:
                        self.client.session.destroy(item["ID"])
                        self.log.info("destroyed session %s of a previous agent run", item["ID"])
                return
            except Exception as exc:  # noqa: BLE001
                if attempt == 0:
                    self.log.warning("listing this node's sessions: %s; retrying", _short(exc))
                self.stop.wait(backoff(attempt))
                attempt += 1

    def _read_specs_once(self) -> dict[str, ServiceSpec]:
        attempt = 0
        while not self.stop.is_set():
            try:
                _i, items = self.client.kv.get(keys.SERVICES, recurse=True)
                self._apply_specs(items or [])
                return dict(self.specs)
            except Exception:  # noqa: BLE001
                self.stop.wait(backoff(attempt))
                attempt += 1
        return {}

    def _shutdown(self) -> None:
        """SIGTERM: stop every process; release each singleton lock as soon as its process is gone."""
        self.log.info("shutting down: stopping %d instance(s)", len(self.instances))
        self._drop_warm(set())

        def stop_one(name: str) -> None:
            inst = self.instances.get(name)
            if inst is None:
                return
            inst.terminate(self.timing.stop_grace)
            if name in self.held:
                self._release_quick(name)

        threads = [threading.Thread(target=stop_one, args=(n,), daemon=True) for n in list(self.instances)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.timing.stop_grace + 3)
        for name in list(self.held):
            self._release_quick(name)
        for name in list(self.instances):
            self._deregister(name)
            self._delete_status(name)
        self.instances.clear()
        try:
            self.session.destroy(self.client)
        except Exception as exc:  # noqa: BLE001
            self.log.warning("session destroy: %s", _short(exc))

    def _release_quick(self, name: str) -> None:
        client = self.ctx.consul(timeout=2.0)
        sid = self.session.id
        self.held.discard(name)
        for attempt in range(3):
            try:
                client.kv.release(keys.LOCKS + name, lock_value(self.ctx.node), sid)
                self.log.info("%s: lock released", name)
                return
            except Exception:  # noqa: BLE001
                time.sleep(backoff(attempt, cap=1.0))


def _probe(host: str, port: int, timeout: float) -> str:
    """A TCP connect: ``ok``, ``refused`` (the host answered, nothing listens) or ``failed`` (timeout…)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "ok"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "failed"


def run(ctx: AgentContext, stop: threading.Event) -> None:
    """Agent task entry point (see :mod:`foundation_cli.agent.tasks`)."""
    Placement(ctx, stop).run()


def instance_dir(data_root: Path, node: str, name: str) -> Path:
    """Where a node keeps an instance's pid file and log (``foundation logs`` reads it)."""
    return data_root / "nodes" / node / "services" / name
