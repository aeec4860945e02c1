"""The bodies the node agent sends to Consul, built in one place.

The agent (:mod:`foundation_cli.agent`) sends them; ``start-singleton
--explain`` shows them by calling the same gateway methods with the same
bodies on a client that sends nothing. Keeping them here (core) lets both use
them without the CLI importing the agent.
"""

from __future__ import annotations

import json
import os

from foundation_cli.core import keys
from foundation_cli.core.service_spec import ServiceSpec
from foundation_cli.core.timing import Timing


def session_body(node: str, timing: Timing) -> dict:
    """The body of ``PUT /v1/session/create``: bound to gossip health and the agent's TTL check."""
    return {
        "Name": f"{keys.AGENT_SERVICE} {node}",
        "Node": node,
        "Checks": ["serfHealth", keys.agent_check_id(node)],
        "LockDelay": timing.lock_delay_text(),
        "Behavior": "release",
    }


def lock_value(node: str) -> str:
    """The value written with ``PUT /v1/kv/foundation/locks/<name>?acquire=<session>``."""
    return json.dumps({"node": node})


def service_registration(spec: ServiceSpec, node: str, timing: Timing) -> dict:
    """Body of ``PUT /v1/agent/service/register`` for an instance."""
    checks: list[dict] = [
        {
            "CheckID": f"foundation:{spec.name}",
            "Name": f"process {spec.name} alive",
            "TTL": f"{int(timing.service_ttl)}s",
            "Status": "passing",
        }
    ]
    if spec.check_http:
        checks.append({"CheckID": f"foundation:{spec.name}:http", "HTTP": spec.check_http, "Interval": "10s"})
    if spec.check_tcp:
        checks.append({"CheckID": f"foundation:{spec.name}:tcp", "TCP": spec.check_tcp, "Interval": "10s"})
    body: dict = {
        "ID": spec.name,
        "Name": spec.name,
        "Tags": list(spec.tags),
        "Meta": {"foundation_mode": spec.mode, "foundation_generation": str(spec.generation)},
        "Checks": checks,
    }
    if spec.port:
        body["Port"] = spec.port
    return body


def agent_registration(node: str, timing: Timing) -> dict:
    """Body of ``PUT /v1/agent/service/register`` for the agent itself."""
    return {
        "ID": keys.agent_service_id(node),
        "Name": keys.AGENT_SERVICE,
        "Meta": {"node": node, "pid": str(os.getpid())},
        "Check": {
            "CheckID": keys.agent_check_id(node),
            "Name": "foundation agent alive",
            "TTL": f"{int(timing.agent_ttl)}s",
            "Status": "passing",
        },
    }
