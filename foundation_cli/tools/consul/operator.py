"""``/v1/operator``: Raft configuration, autopilot configuration and health."""

from __future__ import annotations

import json
from typing import Any

from foundation_cli.tools.consul.base import Endpoint, Params
from foundation_cli.tools.consul.gateway import as_bool


class Operator(Endpoint):
    def raft_config(self, consistency: str | None = None) -> dict:
        """``GET /v1/operator/raft/configuration`` → {Servers: [...], Index}."""
        params: Params = []
        self._consistency(params, consistency)
        return self._call("GET", "/v1/operator/raft/configuration", params)

    def autopilot_configuration(self, consistency: str | None = None) -> dict:
        """``GET /v1/operator/autopilot/configuration``."""
        params: Params = []
        self._consistency(params, consistency)
        return self._call("GET", "/v1/operator/autopilot/configuration", params)

    def update_autopilot_configuration(self, body: dict[str, Any], cas: int | None = None) -> bool:
        """``PUT /v1/operator/autopilot/configuration`` (``?cas``: only at that ModifyIndex)."""
        params: Params = [("cas", cas)] if cas is not None else []
        return self._call("PUT", "/v1/operator/autopilot/configuration", params, data=json.dumps(body), parse=as_bool)

    def autopilot_health(self) -> dict:
        """``GET /v1/operator/autopilot/health`` → {Healthy, FailureTolerance, Servers} (429 = unhealthy, kept)."""
        return self._call("GET", "/v1/operator/autopilot/health", allow=(429,))
