"""``/v1/session``: create, renew, info, node, list, destroy."""

from __future__ import annotations

import json
from typing import Any

from foundation_cli.tools.consul.base import Endpoint, Params
from foundation_cli.tools.consul.gateway import as_bool, as_json


def _one(response):
    data = as_json(response)
    return (data[0] if data else None) if isinstance(data, list) else data


class Session(Endpoint):
    def create(self, body: dict[str, Any]) -> str:
        """``PUT /v1/session/create`` with Consul's JSON body (Name, Node, Checks, LockDelay, Behavior, TTL) → id."""
        return self._call("PUT", "/v1/session/create", data=json.dumps(body), parse=lambda r: as_json(r)["ID"])

    def renew(self, session_id: str) -> dict | None:
        """``PUT /v1/session/renew/<id>`` (TTL sessions) → the session."""
        return self._call("PUT", f"/v1/session/renew/{session_id}", parse=_one, allow_404=False)

    def info(
        self, session_id: str, index: Any = None, wait: str | None = None, consistency: str | None = None
    ) -> tuple[str | None, dict | None]:
        """``GET /v1/session/info/<id>`` → (index, the session or None when it is gone)."""
        params: Params = []
        self._blocking(params, index, wait)
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/session/info/{session_id}", params, parse=_one, with_index=True)

    def node(self, node: str, consistency: str | None = None) -> tuple[str | None, list[dict]]:
        """``GET /v1/session/node/<node>`` → (index, that node's sessions)."""
        params: Params = []
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/session/node/{node}", params, with_index=True)

    def list(self, consistency: str | None = None) -> tuple[str | None, list[dict]]:
        """``GET /v1/session/list`` → (index, every session)."""
        params: Params = []
        self._consistency(params, consistency)
        return self._call("GET", "/v1/session/list", params, with_index=True)

    def destroy(self, session_id: str) -> bool:
        """``PUT /v1/session/destroy/<id>`` (its locks are released or deleted per Behavior)."""
        return self._call("PUT", f"/v1/session/destroy/{session_id}", parse=as_bool)
