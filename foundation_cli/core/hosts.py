"""The host record every discovery strategy returns and ``up`` consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HostRecord:
    """A machine that could be (or is) part of the cluster.

    ``source`` says which strategy found it (static, mdns, dns, consul);
    ``cluster_id`` is set when the machine advertises membership of a cluster.
    """

    address: str
    name: str | None = None
    port: int = 22
    user: str | None = None
    source: str = "static"
    role: str | None = None
    cluster_id: str | None = None
    datacenter: str | None = None
    version: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
