"""Expiry of spilled channel payloads (``foundation/channels/<ch>/blobs/<id>``).

Used by broadcasters (on their own channel, :mod:`foundation_cli.facades.channels`)
and by the agent's sweep over every channel (:mod:`foundation_cli.agent.channels_gc`).
"""

from __future__ import annotations

import time

from foundation_cli.core import envelope as env_mod
from foundation_cli.core import keys

BLOB_RETENTION = 3600.0  # seconds a spilled payload stays in KV


def collect_garbage(client, now: float | None = None, *, limit: int = 256) -> list[str]:
    """Delete spilled payloads older than :data:`BLOB_RETENTION` on every channel; returns the deleted keys.

    One ``GET /v1/kv/foundation/channels/?keys`` listing, then a ``DELETE`` per old copy.
    """
    now = time.time() if now is None else now
    _index, found = client.kv.get(keys.CHANNELS, keys=True)
    old = []
    for key in found or []:
        parts = key[len(keys.CHANNELS) :].split("/")
        if len(parts) == 3 and parts[1] == "blobs" and (env_mod.id_time(parts[2]) or now) < now - BLOB_RETENTION:
            old.append(key)
    deleted = []
    for key in old[:limit]:
        client.kv.delete(key)
        deleted.append(key)
    return deleted
