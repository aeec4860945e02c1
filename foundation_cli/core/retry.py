"""The backoff between retries against Consul (leader elections, a restarting agent).

One schedule for the node agent (agent/context.py ``retrying``, its loops, the config watch of
agent/config_apply.py) and the CLI's long-running readers (facades/channels.py ``listen``):
``base``, doubled per attempt, capped.
"""

from __future__ import annotations


def backoff(attempt: int, *, base: float = 0.25, cap: float = 5.0) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, …): ``base * 2**attempt``, at most ``cap``."""
    return min(cap, base * (2 ** min(attempt, 16)))
