"""The optimizer's vocabulary: a finding's evidence, its raw change, and the recommendation itself.

Rules are plain functions ``rule(snapshot) -> list[Recommendation]`` registered
with :func:`rule`; they read numbers from the snapshot and cite the read that
produced each one, so ``optimize --explain`` can show the evidence as the
exact request that was sent.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "critical")
# next-session: a cluster-wide setting the agents read when they next create their session (singleton
# lock-delay): --apply writes it now, each agent uses it after its next restart or session loss.
APPLIES = ("live", "next-session", "restart", "rolling-restart")


@dataclass
class Evidence:
    """One number (or fact) read, and the name of the snapshot read it came from."""

    label: str
    value: Any
    read: str | None = None  # key into Snapshot.reads


@dataclass
class Change:
    """A recommended change as the raw thing to do: an API call, an agent config diff, a CLI command.

    ``method``/``path``/``body`` make an API call that ``optimize --apply`` can
    send through the recording client (only when the recommendation is
    ``auto``); ``config`` is agent configuration (HCL) to add on the named
    nodes; ``cli`` is the equivalent command line when one exists.
    """

    description: str
    method: str | None = None
    path: str | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    config: str | None = None
    nodes: list[str] = field(default_factory=list)
    cli: str | None = None

    @property
    def is_api(self) -> bool:
        return bool(self.method and self.path)

    def url(self, addr: str) -> str:
        url = addr.rstrip("/") + urllib.parse.quote(self.path or "", safe="/:")
        if self.params:
            url += "?" + urllib.parse.urlencode(self.params)
        return url


@dataclass
class Recommendation:
    id: str  # stable for the same finding: "<rule>" or "<rule>:<subject>"
    rule: str
    severity: str
    title: str
    reasoning: str
    evidence: list[Evidence]
    changes: list[Change]
    applies: str  # live | next-session | restart | rolling-restart
    auto: bool = False  # optimize --apply may perform it (live API calls the tool can make itself)
    docs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.severity in SEVERITIES, self.severity
        assert self.applies in APPLIES, self.applies
        if self.auto:
            assert self.applies in ("live", "next-session") and all(c.is_api for c in self.changes)


Rule = Callable[[Any], list[Recommendation]]
RULES: list[tuple[str, Rule]] = []


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register a rule function under ``name`` (the rule family id)."""

    def decorator(func: Rule) -> Rule:
        RULES.append((name, func))
        return func

    return decorator


def hcl(block: dict[str, Any], indent: int = 0) -> str:
    """A small HCL rendering of an agent config fragment (what the user adds to their consul.hcl)."""
    pad = "  " * indent
    lines = []
    for key, value in block.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            lines.append(hcl(value, indent + 1))
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{key} = {json.dumps(value)}")
    return "\n".join(lines)


def ms(value: float | None) -> str:
    """Milliseconds as people read them."""
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def loopback_only(snap) -> bool:
    """Whether every member gossips on loopback (a one-machine or test cluster)."""
    addrs = [m.addr for m in snap.members.members] or [snap.cluster.agent_addr or ""]
    return all(a.startswith("127.") or a == "::1" for a in addrs)


def relaxed(snap) -> bool:
    """One-machine clusters (local mode, dev agents, loopback): durability findings become notes."""
    return snap.cluster.mode == "local" or snap.agent.dev_mode or loopback_only(snap)
