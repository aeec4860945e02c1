"""``/v1/catalog``: nodes and services the servers know."""

from __future__ import annotations

from typing import Any

from foundation_cli.tools.consul.base import Endpoint, Params


class Catalog(Endpoint):
    def nodes(
        self, index: Any = None, wait: str | None = None, near: str | None = None, consistency: str | None = None
    ) -> tuple[str | None, list[dict]]:
        """``GET /v1/catalog/nodes`` → (index, nodes)."""
        params: Params = []
        self._blocking(params, index, wait)
        if near:
            params.append(("near", near))
        self._consistency(params, consistency)
        return self._call("GET", "/v1/catalog/nodes", params, with_index=True)

    def services(
        self, index: Any = None, wait: str | None = None, consistency: str | None = None
    ) -> tuple[str | None, dict[str, list[str]]]:
        """``GET /v1/catalog/services`` → (index, {name: tags})."""
        params: Params = []
        self._blocking(params, index, wait)
        self._consistency(params, consistency)
        return self._call("GET", "/v1/catalog/services", params, with_index=True)

    def service(
        self, service: str, consistency: str | None = None, index: Any = None, wait: str | None = None
    ) -> tuple[str | None, list[dict]]:
        """``GET /v1/catalog/service/<name>`` → (index, its instances, no health); blocking with ``index``."""
        params: Params = []
        self._blocking(params, index, wait)
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/catalog/service/{service}", params, with_index=True)

    def node(self, node: str, consistency: str | None = None) -> tuple[str | None, dict | None]:
        """``GET /v1/catalog/node/<node>`` → (index, {Node, Services} or None)."""
        params: Params = []
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/catalog/node/{node}", params, with_index=True)

    def ui_services(self) -> list[dict]:
        """``GET /v1/internal/ui/services`` (what Consul's UI uses): counts per service in one request.

        An internal endpoint: older agents answer 404 (NotFoundError), ACLs may refuse it.
        """
        return self._call("GET", "/v1/internal/ui/services", allow_404=False) or []
