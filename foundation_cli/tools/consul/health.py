"""``/v1/health``: instances with their checks — by service, by state, by node."""

from __future__ import annotations

from typing import Any

from foundation_cli.tools.consul.base import Endpoint, Params
from foundation_cli.tools.consul.gateway import Reply, as_reply


class Health(Endpoint):
    def service(
        self,
        service: str,
        index: Any = None,
        wait: str | None = None,
        passing: bool = False,
        tag: str | None = None,
        near: str | None = None,
        consistency: str | None = None,
    ) -> tuple[str | None, list[dict]]:
        """``GET /v1/health/service/<name>`` → (index, [{Node, Service, Checks}])."""
        params: Params = []
        self._blocking(params, index, wait)
        params += _service_filters(passing, tag, near)
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/health/service/{service}", params, with_index=True)

    def state(
        self, state: str = "any", index: Any = None, wait: str | None = None, consistency: str | None = None
    ) -> tuple[str | None, list[dict]]:
        """``GET /v1/health/state/<state>`` (any, passing, warning, critical) → (index, checks)."""
        params: Params = []
        self._blocking(params, index, wait)
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/health/state/{state}", params, with_index=True)

    def node(self, node: str, consistency: str | None = None) -> tuple[str | None, list[dict]]:
        """``GET /v1/health/node/<node>`` → (index, that node's checks)."""
        params: Params = []
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/health/node/{node}", params, with_index=True)

    def checks(self, service: str, consistency: str | None = None) -> tuple[str | None, list[dict]]:
        """``GET /v1/health/checks/<service>`` → (index, the service's checks)."""
        params: Params = []
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/health/checks/{service}", params, with_index=True)

    def service_reply(
        self,
        service: str,
        passing: bool = False,
        tag: str | None = None,
        near: str | None = None,
        consistency: str | None = None,
    ) -> Reply:
        """``GET /v1/health/service/<name>`` kept whole: entries plus X-Consul-Index/KnownLeader/LastContact."""
        params: Params = []
        params += _service_filters(passing, tag, near)
        self._consistency(params, consistency)
        return self._call("GET", f"/v1/health/service/{service}", params, parse=as_reply, allow_404=False)


def _service_filters(passing: bool, tag: str | None, near: str | None) -> Params:
    """The filter parameters ``/v1/health/service/<name>`` takes."""
    return [(k, v) for k, v in (("passing", "1" if passing else None), ("tag", tag), ("near", near)) if v]
