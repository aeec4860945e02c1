"""Dynamic shell completion of names from the cluster (services, nodes, channels).

Each function is a Typer ``autocompletion=`` callback: fast, and silent (no
candidates) when Consul is unreachable. Owned by the polish issue (8);
placement and channel commands use these.
"""

from __future__ import annotations


def service_names(incomplete: str) -> list[str]:
    """Names of Foundation services (specs in KV) starting with ``incomplete``."""
    return []


def node_names(incomplete: str) -> list[str]:
    """Consul node names starting with ``incomplete``."""
    return []


def channel_names(incomplete: str) -> list[str]:
    """Channel names seen in the event list or channel KV, starting with ``incomplete``."""
    return []
