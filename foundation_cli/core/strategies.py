"""Cluster-formation strategies: where `up` gets its hosts (placeholder; issue 7 replaces the body)."""

from __future__ import annotations

from foundation_cli.core.hosts import HostRecord


def find_hosts(config, settings) -> list[HostRecord]:
    """Hosts to bootstrap: the static ``hosts:`` list; none in mortal mode until discovery lands."""
    if config.mode == "mortal" and not config.hosts:
        return []
    return [HostRecord(address=h.address, name=h.node_name, port=h.port or 22, user=h.user) for h in config.hosts]
