"""The service spec: what ``start-singleton`` / ``start-replicated`` store in KV and the agents run.

A spec lives at ``foundation/services/<name>`` as JSON. It is deliberately
deterministic (no timestamps): writing the same spec twice stores the same
bytes, so a ``--dry-run`` script replays to exactly the state the command
makes. ``generation`` is bumped by ``foundation restart`` and is the only
field that changes without the user changing the spec.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from foundation_cli.core import keys
from foundation_cli.errors import ConflictError, UsageError

MODES = ("singleton", "replicated")
RESTART_POLICIES = ("always", "on-failure", "never")
# Consul service names that are discoverable over DNS: a DNS label.
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
RESERVED_NAMES = ("consul", keys.AGENT_SERVICE)


def validate_name(name: str) -> str:
    """A service name must be a DNS label (lower case), as Consul needs for DNS discovery."""
    if not name:
        raise UsageError("service name must not be empty")
    if name != name.lower() and _DNS_LABEL.match(name.lower()):
        raise UsageError(
            f"invalid service name {name!r}: use lower case", hint=f"names are DNS labels, e.g. {name.lower()!r}"
        )
    if not _DNS_LABEL.match(name):
        raise UsageError(
            f"invalid service name {name!r}: must be a DNS label (a-z, 0-9, '-', at most 63, no leading/trailing '-')",
            hint="e.g. web, cron-1, metrics-exporter",
        )
    if name in RESERVED_NAMES:
        raise UsageError(f"service name {name!r} is reserved")
    return name


def parse_pairs(values: list[str] | None, what: str, *, key_pattern: re.Pattern[str] | None = None) -> dict[str, str]:
    """``["K=V", …]`` → dict; one-line error naming the bad item."""
    out: dict[str, str] = {}
    for item in values or []:
        if "=" not in item:
            raise UsageError(f"invalid {what} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        if not key or (key_pattern is not None and not key_pattern.match(key)):
            raise UsageError(f"invalid {what} {item!r}: bad key {key!r}")
        out[key] = value
    return out


def parse_env(values: list[str] | None) -> dict[str, str]:
    return parse_pairs(values, "--env", key_pattern=_ENV_NAME)


def parse_node_meta(values: list[str] | None) -> dict[str, str]:
    return parse_pairs(values, "--node-meta", key_pattern=_META_KEY)


def _validate_tcp(target: str) -> str:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid --check-tcp {target!r}: expected HOST:PORT")
    return target


_USER = re.compile(r"^(?:[a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$")


@dataclass
class ServiceSpec:
    """One placed service. ``command`` is an argv list, run directly (no shell)."""

    name: str
    mode: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    port: int | None = None
    tags: list[str] = field(default_factory=list)
    check_http: str | None = None
    check_tcp: str | None = None
    restart: str = "always"
    node_meta: dict[str, str] = field(default_factory=dict)
    generation: int = 1
    user: str | None = None  # run as this user on the node (the agent drops privileges); None: as the agent (root)

    def validate(self) -> ServiceSpec:
        """Raise a one-line :class:`UsageError` for the first problem found."""
        validate_name(self.name)
        if self.mode not in MODES:
            raise UsageError(f"invalid mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if not self.command or not self.command[0].strip():
            raise UsageError(
                "empty command: nothing to run", hint=f"e.g. foundation start-{self.mode} {self.name} -- python3 app.py"
            )
        if any("\x00" in a for a in self.command):
            raise UsageError("command arguments must not contain NUL bytes")
        if self.restart not in RESTART_POLICIES:
            raise UsageError(
                f"invalid --restart {self.restart!r}: expected one of {', '.join(RESTART_POLICIES)}",
            )
        if self.port is not None and not 0 < self.port < 65536:
            raise UsageError(f"invalid --port {self.port}: expected 1-65535")
        if self.check_http and self.check_tcp:
            raise UsageError("give at most one of --check-http and --check-tcp")
        if self.check_http and not re.match(r"^https?://[^\s/]+", self.check_http):
            raise UsageError(f"invalid --check-http {self.check_http!r}: expected http(s)://HOST[:PORT]/PATH")
        if self.check_tcp:
            _validate_tcp(self.check_tcp)
        if self.cwd is not None and not self.cwd.startswith("/"):
            raise UsageError(f"invalid --cwd {self.cwd!r}: must be an absolute path (it is a path on the node)")
        for tag in self.tags:
            if not tag or any(c.isspace() for c in tag):
                raise UsageError(f"invalid --tag {tag!r}: tags are non-empty and have no whitespace")
        for key in self.env:
            if not _ENV_NAME.match(key):
                raise UsageError(f"invalid --env name {key!r}")
        if self.generation < 1:
            raise UsageError("generation must be ≥ 1")
        if self.user is not None and not _USER.fullmatch(self.user):
            raise UsageError(f"invalid --user {self.user!r}: expected a user name or a numeric uid")
        return self

    # -- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "command": list(self.command),
            "env": dict(sorted(self.env.items())),
            "cwd": self.cwd,
            "port": self.port,
            "tags": list(self.tags),
            "check_http": self.check_http,
            "check_tcp": self.check_tcp,
            "restart": self.restart,
            "node_meta": dict(sorted(self.node_meta.items())),
            "generation": self.generation,
            **({"user": self.user} if self.user is not None else {}),  # absent when unset: old specs keep their bytes
        }

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, no whitespace) so equal specs store equal values."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceSpec:
        try:
            return cls(
                name=str(data["name"]),
                mode=str(data["mode"]),
                command=[str(a) for a in data["command"]],
                env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
                cwd=data.get("cwd"),
                port=None if data.get("port") is None else int(data["port"]),
                tags=[str(t) for t in (data.get("tags") or [])],
                check_http=data.get("check_http"),
                check_tcp=data.get("check_tcp"),
                restart=str(data.get("restart") or "always"),
                node_meta={str(k): str(v) for k, v in (data.get("node_meta") or {}).items()},
                generation=int(data.get("generation") or 1),
                user=None if data.get("user") is None else str(data["user"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"malformed service spec: {exc}") from None

    @classmethod
    def from_json(cls, raw: bytes | str) -> ServiceSpec:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"malformed service spec (not JSON): {exc}") from None
        if not isinstance(data, dict):
            raise UsageError("malformed service spec: not a JSON object")
        return cls.from_dict(data)

    def digest(self) -> str:
        """Short hash of everything that shapes the running process (restart when it changes)."""
        return hashlib.sha256(self.to_json()).hexdigest()[:16]

    def eligible(self, node_meta: dict[str, str]) -> bool:
        """Whether a node with ``node_meta`` may run this service (every K=V constraint matches)."""
        return all(node_meta.get(k) == v for k, v in self.node_meta.items())


def check_update(existing: ServiceSpec | None, new: ServiceSpec) -> ServiceSpec:
    """The spec to store when ``new`` replaces ``existing``; a mode change is a conflict, never silent."""
    if existing is None:
        return new
    if existing.mode != new.mode:
        raise ConflictError(
            f"service {new.name!r} already exists as a {existing.mode}; it cannot silently become {new.mode}",
            hint=f"`foundation stop {new.name}` first, then start it again",
        )
    if existing.to_dict() | {"generation": 0} == new.to_dict() | {"generation": 0}:
        new.generation = existing.generation  # unchanged: same bytes, nothing restarts
    else:
        new.generation = existing.generation + 1
    return new
