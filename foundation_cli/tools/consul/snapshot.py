"""``/v1/snapshot``: save and restore the servers' state (KV, sessions, catalog, ACLs)."""

from __future__ import annotations

from foundation_cli.tools.consul.base import Endpoint, Params
from foundation_cli.tools.consul.gateway import as_bool


class Snapshot(Endpoint):
    def save(self, stale: bool = False) -> bytes:
        """``GET /v1/snapshot`` → the gzipped snapshot archive (``?stale``: any server may answer)."""
        params: Params = [("stale", "true")] if stale else []
        return self._call("GET", "/v1/snapshot", params, parse=lambda r: r.body, allow_404=False, raw=True)

    def restore(self, archive: bytes) -> bool:
        """``PUT /v1/snapshot`` with an archive from :meth:`save` (replaces the servers' state)."""
        return self._call("PUT", "/v1/snapshot", data=archive, parse=as_bool)
