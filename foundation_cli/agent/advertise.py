"""Agent task: announce this node on mDNS and keep browsing for machines that want to join.

Runs only when ``FOUNDATION_MDNS_INTERFACE`` names the interface(s) to use
(the agent's environment, e.g. ``agent.env`` in foundation.yaml); without it
the task does nothing — Foundation never multicasts on an interface nobody
named. ``FOUNDATION_SSH_PORT`` sets the announced SSH port (default 22).

What it does with what it hears (records judged by
:mod:`foundation_cli.core.mdns_records`):

- an **unclaimed** machine (``foundation advertise`` on a fresh box) whose
  datacenter is empty or ours, or a machine **claiming our cluster id** that
  is not a member, is written to ``foundation/discovered/<addr>`` (JSON) so
  ``foundation status`` can report it; the key is deleted on its goodbye or
  once it is a member;
- with ``auto_join`` true in the cluster record (wizard ``cluster.auto_join``;
  or ``FOUNDATION_AUTO_JOIN=1`` in the agent's environment),
  a machine claiming our cluster id and datacenter that is not a member is
  joined with ``PUT /v1/agent/join/<addr>`` (``consul join <addr>``) — the
  live equivalent of adding it to the servers' ``retry_join``. Gossip
  encryption still guards the door: a spoofed claim cannot join without the key.

Anyone on the LAN can send answers, so what they cost is bounded: at most
:data:`MAX_DISCOVERED` machines recorded by one agent (more are ignored, logged
once a minute), at most :data:`WRITES_PER_MINUTE` KV writes a minute, entries
not heard for :data:`EXPIRE_AFTER` deleted (this agent's, and anyone's older
than twice that), and the in-memory maps capped. 20,000 spoofed answers make
at most 64 keys.
"""

from __future__ import annotations

import json
import os
import threading
import time

from foundation_cli.core import keys, mdns_records

MEMBERS_REFRESH = 30.0
REWRITE_AFTER = 300.0
MAX_DISCOVERED = 64  # machines one agent records under foundation/discovered/
WRITES_PER_MINUTE = 30  # KV writes (token bucket, this burst)
EXPIRE_AFTER = 900.0  # a recorded machine not heard for this long is deleted
SWEEP_EVERY = 60.0
MAX_INSTANCES = 1024  # instance names remembered for goodbyes


def run(ctx, stop: threading.Event) -> None:
    """Announce + browse until ``stop``; see the module docstring."""
    from foundation_cli.agent.context import retrying
    from foundation_cli.tools import mdns as mdns_tool

    specs = mdns_tool.interfaces_from_env()
    if not specs:
        ctx.logger.info("mdns: %s not set; not advertising or browsing", mdns_tool.ENV_INTERFACE)
        return
    import importlib.util

    if importlib.util.find_spec("zeroconf") is None:  # a bundle for a Python no zeroconf wheel fitted
        ctx.logger.warning("mdns: zeroconf is not installed with this agent; not advertising or browsing")
        return
    try:
        binding = mdns_tool.resolve_binding(specs, ipv6=os.environ.get("FOUNDATION_MDNS_IPV6") == "1")
    except Exception as exc:
        ctx.logger.warning("mdns: %s", getattr(exc, "message", exc))
        return
    client = ctx.consul()
    cluster = retrying(lambda: _cluster_record(client), stop, ctx.logger, "mdns: read cluster record")
    if cluster is None:
        return
    role = retrying(lambda: _role(client), stop, ctx.logger, "mdns: read agent role")
    if role is None:
        return
    from foundation_cli import __version__

    ssh_port = int(os.environ.get("FOUNDATION_SSH_PORT", "22") or 22)
    ad = mdns_records.Advertisement(
        node=ctx.node,
        role=role,
        datacenter=cluster.get("datacenter") or "",
        cluster_id=cluster.get("cluster_id") or "",
        version=__version__,
        ssh_port=ssh_port,
    )
    label = binding.addresses[0].split("%", 1)[0] if binding.addresses else "all"
    advertiser = mdns_tool.Advertiser(binding, instance=f"{ctx.node}@{label}", fields=ad.fields(), port=ssh_port)
    browser = mdns_tool.Browser(binding)
    watcher = Watcher(ctx, client, cluster)
    try:
        advertiser.start()
        watcher.own_instance = advertiser.full_name
        browser.start()
        ctx.logger.info("mdns: announcing %s on %s and browsing", advertiser.instance, binding.label)
        swept = 0.0
        while not stop.is_set():
            if time.monotonic() - swept > SWEEP_EVERY:
                swept = time.monotonic()
                try:
                    watcher.sweep()
                except Exception as exc:  # Consul hiccups must not end the task
                    ctx.logger.warning("mdns: sweeping old discoveries failed: %s", exc)
            item = browser.next(1.0)
            if item is None:
                continue
            answer, removed = item
            try:
                watcher.handle(answer, removed)
            except Exception as exc:  # Consul hiccups must not end the task
                ctx.logger.warning("mdns: handling %s failed: %s", answer.instance if answer else "?", exc)
    except Exception as exc:
        ctx.logger.warning("mdns: stopped: %s", getattr(exc, "message", exc))
    finally:
        browser.close()
        advertiser.close()


def _cluster_record(client) -> dict:
    _idx, entry = client.kv.get(keys.CLUSTER)
    if not entry or not entry.get("Value"):
        raise RuntimeError("no cluster record yet")
    data = json.loads(entry["Value"])
    return data if isinstance(data, dict) else {}


def _role(client) -> str:
    info = client.agent.self()
    return "server" if info.get("Config", {}).get("Server") else "client"


class Watcher:
    """Decides what a browse answer means for the cluster and writes it down (KV, join)."""

    def __init__(self, ctx, client, cluster: dict) -> None:
        self.ctx = ctx
        self.client = client
        self.cluster_id = cluster.get("cluster_id") or None
        self.datacenter = cluster.get("datacenter") or None
        self.auto_join = bool(cluster.get("auto_join")) or os.environ.get("FOUNDATION_AUTO_JOIN") == "1"
        self._members: set[str] = set()
        self._members_at = 0.0
        self._written: dict[str, tuple[str, float]] = {}  # addr -> (json, when)
        self._instances: dict[str, str] = {}  # instance -> addr
        self._joined: dict[str, float] = {}
        self._seen: dict[str, float] = {}  # addr -> when last heard (recorded ones)
        self._tokens = float(WRITES_PER_MINUTE)
        self._tokens_at = time.monotonic()
        self._dropped = 0
        self._dropped_logged = 0.0
        self.own_instance: str | None = None  # our own announcement (never "discovered")

    def members(self) -> set[str]:
        if time.monotonic() - self._members_at > MEMBERS_REFRESH:
            _idx, nodes = self.client.catalog.nodes()
            self._members = {n.get("Address") for n in nodes or [] if n.get("Address")}
            self._members_at = time.monotonic()
        return self._members

    def handle(self, answer, removed: bool) -> None:
        if answer is None:
            return
        if removed:
            addr = self._instances.pop(answer.instance, None)
            if addr:
                self._forget(addr)
            return
        if answer.service_type != mdns_records.SERVICE_TYPE or answer.instance == self.own_instance:
            return
        rec = mdns_records.record_from_answer(answer)
        if not rec.address:
            return
        claims_ours = bool(self.cluster_id) and rec.cluster_id == self.cluster_id and "problems" not in rec.extra
        members = self.members()
        if rec.address not in members and claims_ours:
            self._members_at = 0.0  # it may have joined since the last refresh
            members = self.members()
        status = mdns_records.classify(rec, cluster_id=self.cluster_id, members=members)
        if status == mdns_records.THIS_CLUSTER:
            self._forget(rec.address)
            return
        dc_ok = not rec.datacenter or rec.datacenter == self.datacenter
        wanted = (status == mdns_records.UNCLAIMED and dc_ok) or (claims_ours and rec.address not in members)
        if not wanted:
            return
        self._remember(rec, status="claims-this-cluster" if claims_ours else status)
        if rec.address in self._written:  # only recorded machines need their goodbye heard
            if answer.instance not in self._instances and len(self._instances) >= MAX_INSTANCES:
                self._instances.pop(next(iter(self._instances)))  # the oldest; expiry still deletes its key
            self._instances[answer.instance] = rec.address
        if self.auto_join and claims_ours and rec.datacenter == self.datacenter:
            self._join(rec.address)

    def _remember(self, rec, *, status: str) -> None:
        from foundation_cli.core.strategies import to_dict

        data = to_dict(rec)
        data["status"] = status
        stable = json.dumps(data, sort_keys=True)
        previous = self._written.get(rec.address)
        if previous is None and len(self._written) >= MAX_DISCOVERED:
            self._drop(rec.address)
            return
        self._seen[rec.address] = time.monotonic()
        if previous and previous[0] == stable and time.monotonic() - previous[1] < REWRITE_AFTER:
            return
        if not self._take_token():
            self._drop(rec.address)  # heard again later, written then
            return
        data.update(seen_by=self.ctx.node, last_seen=int(time.time()))
        self.client.kv.put(keys.DISCOVERED + rec.address, json.dumps(data, sort_keys=True))
        self._written[rec.address] = (stable, time.monotonic())
        self.ctx.logger.info("mdns: discovered %s (%s, %s)", rec.address, rec.name, status)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(WRITES_PER_MINUTE), self._tokens + (now - self._tokens_at) * WRITES_PER_MINUTE / 60.0)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _drop(self, addr: str) -> None:
        self._dropped += 1
        if time.monotonic() - self._dropped_logged > 60.0:
            self._dropped_logged = time.monotonic()
            self.ctx.logger.warning(
                "mdns: %d answer(s) not recorded (at most %d machines, %d writes a minute); last from %s",
                self._dropped,
                MAX_DISCOVERED,
                WRITES_PER_MINUTE,
                addr,
            )
            self._dropped = 0

    def sweep(self) -> None:
        """Delete what was not heard for :data:`EXPIRE_AFTER`: ours by memory, anyone's by ``last_seen``."""
        now = time.monotonic()
        for addr, heard in list(self._seen.items()):
            if now - heard > EXPIRE_AFTER:
                self._seen.pop(addr, None)
                self._forget(addr)
        _idx, items = self.client.kv.get(keys.DISCOVERED, recurse=True)
        for item in items or []:
            try:
                data = json.loads(item.get("Value") or b"{}")
                last = float(data.get("last_seen") or 0)
            except (ValueError, TypeError, AttributeError):
                data, last = {}, 0.0
            mine = isinstance(data, dict) and data.get("seen_by") == self.ctx.node
            age = time.time() - last
            addr = item["Key"][len(keys.DISCOVERED) :]
            if (mine and addr not in self._written and age > EXPIRE_AFTER) or age > 2 * EXPIRE_AFTER:
                self.client.kv.delete(item["Key"])

    def _forget(self, addr: str) -> None:
        self._seen.pop(addr, None)
        if self._written.pop(addr, None) is not None:
            self.client.kv.delete(keys.DISCOVERED + addr)

    def _join(self, addr: str) -> None:
        last = self._joined.get(addr, 0.0)
        if time.monotonic() - last < 30.0:
            return
        if len(self._joined) >= MAX_INSTANCES:  # spoofed claimants: keep only the recent attempts
            self._joined = {a: t for a, t in self._joined.items() if time.monotonic() - t < 30.0}
        self._joined[addr] = time.monotonic()
        try:
            self.client.agent.join(addr)
            self.ctx.logger.info("mdns: auto_join: joined %s", addr)
            self._members_at = 0.0
        except Exception as exc:
            self.ctx.logger.warning("mdns: auto_join %s failed: %s", addr, exc)
