"""Cluster-wide configuration: values in KV under ``foundation/config/`` (``foundation config set/get/list/unset``).

Every write is check-and-set: the writer reads the key's ModifyIndex and
writes with ``?cas=<index>``, so of two concurrent writers one wins and the
other gets a :class:`ConflictError` instead of silently overwriting. The
ModifyIndex after the write is the value's *version*.

Node agents watch the prefix (blocking queries) and apply the keys they own
(:mod:`foundation_cli.core.live_settings`) live, then report the KV index they
have applied at ``foundation/config-status/<node>``; ``status()`` compares
that with a key's version. ``cluster_wide`` also announces the change on the
control channel (event ``foundation:_control``) for anyone listening.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from foundation_cli.core import keys
from foundation_cli.errors import ConflictError, NotFoundError, UsageError

KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
MAX_KEY = 256
MAX_VALUE = 512 * 1024
AGENT_SERVICE = keys.AGENT_SERVICE


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY or not KEY_RE.match(key):
        raise UsageError(
            f"invalid config key {key!r}",
            hint="use segments of A-Z a-z 0-9 . _ - separated by '/', e.g. agent.log_level or app/feature.x",
        )
    return key


def validate_value(key: str, value: str, *, current: dict[str, str] | None = None) -> None:
    """Check values of agent-owned keys before they reach the agents (bad input never gets stored)."""
    from foundation_cli.core import live_settings

    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # an argument that is not UTF-8 (the shell's bytes, surrogate-escaped)
        raise UsageError(
            f"invalid value for {key}: not valid UTF-8", hint="config values are UTF-8 text; check the shell's locale"
        ) from None
    if len(value.encode("utf-8")) > MAX_VALUE:
        raise UsageError(f"value for {key} is too large (Consul KV holds at most {MAX_VALUE // 1024} KiB)")
    try:
        parsed = live_settings.validate(key, value)
    except ValueError as exc:
        raise UsageError(f"invalid value {value!r} for {key}: {exc}") from None
    if key in ("singleton.lock_delay", "singleton.fence_timeout"):
        values = {}
        for other, text in (current or {}).items():
            if other in ("singleton.lock_delay", "singleton.fence_timeout") and other != key:
                try:
                    values[other] = live_settings.validate(other, text)
                except ValueError:
                    pass
        values[key] = parsed
        problem = live_settings.check_timing(values)
        if problem:
            raise UsageError(f"refusing {key}={value}: {problem}", hint="change the other timing first")


@dataclass
class ConfigEntry:
    key: str
    value: str
    version: int

    def to_dict(self) -> dict:
        from foundation_cli.core import live_settings

        owned = live_settings.OWNED.get(self.key)
        return {
            "key": self.key,
            "value": self.value,
            "version": self.version,
            "agent_setting": owned is not None,
            "description": owned.help if owned else None,
        }


class ClusterConfig:
    """Config operations on a connected, recording Consul client."""

    def __init__(self, client) -> None:
        self.client = client

    def _read(self, key: str) -> tuple[int, dict | None]:

        return self.client.kv.get(keys.CONFIG + key)

    @staticmethod
    def _entry(item: dict) -> ConfigEntry:
        raw = item.get("Value") or b""
        return ConfigEntry(
            key=item["Key"][len(keys.CONFIG) :],
            value=raw.decode("utf-8", "replace"),
            version=int(item.get("ModifyIndex") or 0),
        )

    def get(self, key: str) -> ConfigEntry:
        validate_key(key)
        _index, item = self._read(key)
        if item is None:
            raise NotFoundError(f"config key {key!r} is not set", hint="`foundation config list` shows what is set")
        return self._entry(item)

    def list(self) -> list[ConfigEntry]:

        _index, items = self.client.kv.get(keys.CONFIG, recurse=True)
        return [self._entry(i) for i in items or [] if i["Key"] != keys.CONFIG]

    def set(self, key: str, value: str, *, cas: int | None = None, cluster_wide: bool = False) -> dict:
        """Write ``key`` with check-and-set; returns ``{key, value, previous_version, version, announced}``."""

        validate_key(key)
        if cas is not None and cas < 0:
            raise UsageError("--cas must be 0 (only if unset) or a version (ModifyIndex)")
        current = {e.key: e.value for e in self.list()} if key.startswith("singleton.") else None
        validate_value(key, value, current=current)
        if cas is None:
            _index, item = self._read(key)
            cas = int(item["ModifyIndex"]) if item else 0
        ok = self.client.kv.put(keys.CONFIG + key, value.encode("utf-8"), cas=cas)
        if not ok:
            raise ConflictError(
                f"config {key} changed since version {cas}; not written"
                if cas
                else f"config {key} was set by someone else meanwhile; not written",
                hint=f"`foundation config get {key}` shows the current version; retry or pass --cas VERSION",
            )
        version = None
        if not self._dry_run():
            _index, item = self._read(key)
            version = int(item["ModifyIndex"]) if item else None
        result = {"key": key, "value": value, "previous_version": cas, "version": version, "announced": None}
        if cluster_wide:
            result["announced"] = self.announce("set", key, version)
        return result

    def unset(self, key: str, *, cas: int | None = None, cluster_wide: bool = False) -> dict:

        validate_key(key)
        if cas is None:
            _index, item = self._read(key)
            if item is None:
                raise NotFoundError(f"config key {key!r} is not set")
            cas = int(item["ModifyIndex"])
        ok = self.client.kv.delete(keys.CONFIG + key, cas=cas)
        if not ok:
            raise ConflictError(f"config {key} changed since version {cas}; not removed")
        result = {"key": key, "previous_version": cas, "removed": True, "announced": None}
        if cluster_wide:
            result["announced"] = self.announce("unset", key, None)
        return result

    def _dry_run(self) -> bool:
        from foundation_cli.raw.recorder import current_recorder

        return current_recorder().dry_run

    def announce(self, op: str, key: str, version: int | None) -> str:
        """Tell listeners of the control channel; returns the message id."""
        from foundation_cli.facades.channels import Channels

        body = {"type": "config", "op": op, "key": key, "version": version}
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return Channels(self.client).broadcast(keys.CONTROL_CHANNEL, data, content_type="application/json").id

    def status(self, key: str) -> dict:
        """Which agents have applied ``key``'s current version (from ``foundation/config-status/<node>``)."""

        validate_key(key)
        _index, item = self._read(key)
        version = int(item["ModifyIndex"]) if item else None
        _index, reports = self.client.kv.get(keys.CONFIG_STATUS, recurse=True)
        _index, agents = self.client.catalog.service(AGENT_SERVICE)
        nodes: dict[str, dict] = {}
        for report in reports or []:
            node = report["Key"][len(keys.CONFIG_STATUS) :]
            try:
                data = json.loads(report.get("Value") or b"{}")
            except ValueError:
                data = {}
            applied_index = int(data.get("index") or 0)
            rejected = (data.get("rejected") or {}).get(key)
            if rejected:
                state = "rejected"
            elif version is None:
                state = "unset" if key not in (data.get("values") or {}) else "pending"
            else:
                state = "applied" if applied_index >= version else "pending"
            nodes[node] = {
                "node": node,
                "state": state,
                "applied_index": applied_index,
                "reason": rejected,
                "reported_at": data.get("time"),
                "age_s": None if not data.get("time") else round(time.time() - float(data["time"]), 1),
            }
        for agent in agents or []:
            node = agent.get("Node")
            if node and node not in nodes:
                nodes[node] = {"node": node, "state": "no report", "applied_index": None, "reason": None}
        listed = sorted(nodes.values(), key=lambda n: n["node"])
        return {
            "key": key,
            "version": version,
            "nodes": listed,
            "applied": sum(1 for n in listed if n["state"] in ("applied", "unset")),
            "total": len(listed),
        }
