"""`foundation discover` / `services` against a real Consul agent: placed and foreign services alike."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from importlib import resources

import jsonschema
import pytest

pytestmark = pytest.mark.timeout(120)


def cli(agent, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "foundation_cli", *args],
        env={**agent.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def put(agent, path: str, body: dict) -> None:
    req = urllib.request.Request(f"{agent.http_addr}{path}", data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def schema() -> dict:
    return json.loads(resources.files("foundation_cli").joinpath("schemas/discover.json").read_text())


@pytest.fixture(scope="module")
def services(consul_agent):
    """A service registered like a Foundation agent does, and one registered by something else."""
    from foundation_cli.core.agent_requests import service_registration
    from foundation_cli.core.service_spec import ServiceSpec
    from foundation_cli.core.timing import Timing

    spec = ServiceSpec(name="placed", mode="singleton", command=["sleep", "1000"], port=7000, tags=["blue"])
    put(consul_agent, "/v1/agent/service/register", service_registration(spec, "n", Timing()))
    # A foreign service on two more (catalog-only) nodes: one passing, one failing with output.
    for node, status, output in (("ext-1", "passing", "HTTP 200 OK"), ("ext-2", "critical", "connection refused")):
        put(
            consul_agent,
            "/v1/catalog/register",
            {
                "Node": node,
                "Address": f"10.9.0.{node[-1]}",
                "Service": {"ID": "web", "Service": "web", "Port": 8080, "Tags": ["v2"], "Meta": {"team": "a"}},
                "Check": {
                    "CheckID": "web-http",
                    "Name": "web http",
                    "Status": status,
                    "ServiceID": "web",
                    "Output": output,
                },
            },
        )
    return consul_agent


def test_discover_json_validates_and_aggregates_health(services) -> None:
    proc = cli(services, "discover", "web", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    jsonschema.validate(data, schema())
    by_node = {i["node"]: i for i in data["instances"]}
    assert by_node["ext-1"]["health"] == "passing" and by_node["ext-2"]["health"] == "critical"
    assert by_node["ext-1"]["address"] == "10.9.0.1" and by_node["ext-1"]["port"] == 8080
    assert by_node["ext-2"]["checks"][0]["output"] == "connection refused"
    assert by_node["ext-1"]["meta"] == {"team": "a"} and data["health"] == {"passing": 1, "warning": 0, "critical": 1}

    passing = json.loads(cli(services, "discover", "web", "--passing", "--json").stdout)
    jsonschema.validate(passing, schema())
    assert [i["node"] for i in passing["instances"]] == ["ext-1"]
    stale = json.loads(cli(services, "discover", "web", "--stale", "--tag", "v2", "--json").stdout)
    assert stale["count"] == 2 and stale["filters"]["stale"] is True


def test_discover_finds_a_foundation_placed_service(services) -> None:
    data = json.loads(cli(services, "discover", "placed", "--json").stdout)
    jsonschema.validate(data, schema())
    (inst,) = data["instances"]
    assert inst["port"] == 7000 and inst["tags"] == ["blue"] and inst["meta"]["foundation_mode"] == "singleton"
    assert {c["scope"] for c in inst["checks"]} == {"node", "service"}


def test_discover_table_and_verbose_check_output(services) -> None:
    table = cli(services, "discover", "web", "--no-color")
    assert table.returncode == 0
    assert "ext-2" in table.stdout and "critical" in table.stdout and "connection refused" not in table.stdout
    verbose = cli(services, "discover", "web", "-v", "--no-color")
    assert "connection refused" in verbose.stdout


def test_services_counts_instances_and_checks(services) -> None:
    proc = cli(services, "services", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["web"]["instances"] == 2 and rows["web"]["nodes"] == 2
    assert rows["web"]["checks"] == {"passing": 1, "warning": 0, "critical": 1}
    assert rows["placed"]["instances"] == 1


def test_services_fallback_without_the_ui_endpoint(services) -> None:
    from foundation_cli.facades.service_mesh import ServiceMesh
    from foundation_cli.settings import resolve
    from foundation_cli.tools import consul as consul_tool

    mesh = ServiceMesh(consul_tool.connect(resolve(consul_addr=services.http_addr, env={})))
    rows = {r["name"]: r for r in mesh._services_fallback()}
    assert rows["web"]["instances"] == 2 and rows["web"]["checks"]["critical"] == 1


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["discover", "nope"], 5, "no service named 'nope'"),
        (["discover", "bad name"], 2, "invalid service name"),
    ],
)
def test_bad_input(services, args, code, message) -> None:
    proc = cli(services, *args)
    assert proc.returncode == code and message in proc.stderr and "Traceback" not in proc.stderr
