"""Optimizer rules, one module per family; importing this package registers them all (in this order)."""

from foundation_cli.core.rules import checks, events, gossip, members, security, servers, singleton  # noqa: F401
from foundation_cli.core.rules.base import RULES, Change, Evidence, Recommendation

__all__ = ["RULES", "Change", "Evidence", "Recommendation"]
