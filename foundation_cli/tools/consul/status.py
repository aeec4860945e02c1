"""``/v1/status``: the Raft leader and peers."""

from __future__ import annotations

from foundation_cli.tools.consul.base import Endpoint


class Status(Endpoint):
    def leader(self) -> str:
        """``GET /v1/status/leader`` → ``"ip:port"`` of the leader, ``""`` when there is none."""
        return self._call("GET", "/v1/status/leader")

    def peers(self) -> list[str]:
        """``GET /v1/status/peers`` → the Raft peers' ``ip:port``."""
        return self._call("GET", "/v1/status/peers")
