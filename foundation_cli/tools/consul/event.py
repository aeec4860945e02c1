"""``/v1/event``: fire and list user events."""

from __future__ import annotations

from typing import Any

from foundation_cli.tools.consul.base import Endpoint, Params
from foundation_cli.tools.consul.gateway import as_json, decode_values


def _filters(params: Params, node: str | None, service: str | None, tag: str | None) -> None:
    for name, value in (("node", node), ("service", service), ("tag", tag)):
        if value:
            params.append((name, value))


class Event(Endpoint):
    def fire(
        self,
        name: str,
        body: str | bytes = "",
        node: str | None = None,
        service: str | None = None,
        tag: str | None = None,
    ) -> dict:
        """``PUT /v1/event/fire/<name>`` (optionally filtered to nodes/services/tags) → the event."""
        params: Params = []
        _filters(params, node, service, tag)
        return self._call("PUT", f"/v1/event/fire/{name}", params, data=body)

    def list(
        self,
        name: str | None = None,
        index: Any = None,
        wait: str | None = None,
        node: str | None = None,
        service: str | None = None,
        tag: str | None = None,
    ) -> tuple[str | None, list[dict]]:
        """``GET /v1/event/list`` → (index, the agent's recent events, payloads as bytes)."""
        params: Params = []
        if name:
            params.append(("name", name))
        self._blocking(params, index, wait)
        _filters(params, node, service, tag)
        return self._call(
            "GET", "/v1/event/list", params, parse=lambda r: decode_values(as_json(r), "Payload"), with_index=True
        )
