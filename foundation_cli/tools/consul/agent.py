"""``/v1/agent``: the local agent — self, members, metrics, services and checks it runs, maintenance."""

from __future__ import annotations

import json
from typing import Any

from foundation_cli.tools.consul.base import Endpoint, Params
from foundation_cli.tools.consul.gateway import as_bool


class Agent(Endpoint):
    def __init__(self, client) -> None:
        super().__init__(client)
        self.service = AgentService(client)
        self.check = AgentCheck(client)

    def self(self) -> dict:
        """``GET /v1/agent/self`` → the agent's configuration and member record."""
        return self._call("GET", "/v1/agent/self")

    def members(self, wan: bool = False) -> list[dict]:
        """``GET /v1/agent/members`` → the gossip members this agent sees."""
        return self._call("GET", "/v1/agent/members", [("wan", 1)] if wan else [])

    def metrics(self) -> dict:
        """``GET /v1/agent/metrics`` → gauges, counters, samples (JSON)."""
        return self._call("GET", "/v1/agent/metrics")

    def services(self) -> dict[str, dict]:
        """``GET /v1/agent/services`` → the services registered with this agent, by id."""
        return self._call("GET", "/v1/agent/services")

    def checks(self) -> dict[str, dict]:
        """``GET /v1/agent/checks`` → the checks registered with this agent, by id."""
        return self._call("GET", "/v1/agent/checks")

    def join(self, address: str, wan: bool = False) -> bool:
        """``PUT /v1/agent/join/<address>``: gossip-join another agent."""
        return self._call("PUT", f"/v1/agent/join/{address}", [("wan", 1)] if wan else [], parse=as_bool)

    def force_leave(self, node: str, prune: bool = False) -> bool:
        """``PUT /v1/agent/force-leave/<node>``: mark a failed member left (``?prune``: forget it)."""
        return self._call("PUT", f"/v1/agent/force-leave/{node}", [("prune", "1")] if prune else [], parse=as_bool)

    def maintenance(self, enable: bool, reason: str | None = None) -> bool:
        """``PUT /v1/agent/maintenance?enable=``: node maintenance mode (every service critical)."""
        params: Params = [("enable", "true" if enable else "false")]
        if reason:
            params.append(("reason", reason))
        return self._call("PUT", "/v1/agent/maintenance", params, parse=as_bool)


class AgentService(Endpoint):
    def register(self, body: dict[str, Any], replace_existing_checks: bool = False) -> bool:
        """``PUT /v1/agent/service/register`` with Consul's JSON service definition."""
        params: Params = [("replace-existing-checks", "true")] if replace_existing_checks else []
        return self._call("PUT", "/v1/agent/service/register", params, data=json.dumps(body), parse=as_bool)

    def deregister(self, service_id: str) -> bool:
        """``PUT /v1/agent/service/deregister/<id>``."""
        return self._call("PUT", f"/v1/agent/service/deregister/{service_id}", parse=as_bool)

    def maintenance(self, service_id: str, enable: bool, reason: str | None = None) -> bool:
        """``PUT /v1/agent/service/maintenance/<id>?enable=``: one service in maintenance."""
        params: Params = [("enable", "true" if enable else "false")]
        if reason:
            params.append(("reason", reason))
        return self._call("PUT", f"/v1/agent/service/maintenance/{service_id}", params, parse=as_bool)


class AgentCheck(Endpoint):
    def register(self, body: dict[str, Any]) -> bool:
        """``PUT /v1/agent/check/register`` with Consul's JSON check definition."""
        return self._call("PUT", "/v1/agent/check/register", data=json.dumps(body), parse=as_bool)

    def deregister(self, check_id: str) -> bool:
        """``PUT /v1/agent/check/deregister/<id>``."""
        return self._call("PUT", f"/v1/agent/check/deregister/{check_id}", parse=as_bool)

    def _ttl(self, state: str, check_id: str, notes: str | None) -> bool:
        return self._call(
            "PUT", f"/v1/agent/check/{state}/{check_id}", [("note", notes)] if notes else [], parse=as_bool
        )

    def ttl_pass(self, check_id: str, notes: str | None = None) -> bool:
        """``PUT /v1/agent/check/pass/<id>``: a TTL check passes (``?note``)."""
        return self._ttl("pass", check_id, notes)

    def ttl_warn(self, check_id: str, notes: str | None = None) -> bool:
        """``PUT /v1/agent/check/warn/<id>``."""
        return self._ttl("warn", check_id, notes)

    def ttl_fail(self, check_id: str, notes: str | None = None) -> bool:
        """``PUT /v1/agent/check/fail/<id>``."""
        return self._ttl("fail", check_id, notes)
