"""Every `# consul:` equivalent Foundation can print does what its curl line does (real Consul).

Table-driven over :data:`foundation_cli.raw.render.EQUIVALENTS`: each row has at least one case
here (a test fails when a row is added without one). A case is a request as Foundation records it;
the test renders its curl line and its consul line, runs both with bash against the same agent
from the same starting state, and compares — reads: the same data (the curl's JSON against the
CLI's text, field by field); writes: the same resulting state and both succeed (or both fail).
Requests with no CLI equivalent must render none (the near misses that used to be printed).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from foundation_cli.raw import render
from foundation_cli.raw.operation import RawOperation
from tests.lab.consul import ConsulAgent, start_agent

pytestmark = pytest.mark.timeout(300)

P = "equiv/"


def _http(agent: ConsulAgent, method: str, path: str, body: bytes | str | None = None) -> Any:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(agent.http_addr + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text.decode()


def _bash(line: str, agent: ConsulAgent) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP_")}
    env["CONSUL_HTTP_ADDR"] = agent.http_addr
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, timeout=60)


# -- state and comparisons -------------------------------------------------------------------


def kv_state(agent: ConsulAgent) -> dict:
    entries = _http(agent, "GET", f"/v1/kv/{P}?recurse") or []
    return {e["Key"]: (e["Value"], e["Flags"], e.get("Session")) for e in entries}


def services_state(agent: ConsulAgent) -> list:
    return sorted((_http(agent, "GET", "/v1/agent/services") or {}).keys())


def autopilot_state(agent: ConsulAgent) -> dict:
    conf = _http(agent, "GET", "/v1/operator/autopilot/configuration")
    return {k: v for k, v in conf.items() if not k.endswith("Index")}


def last_event(agent: ConsulAgent) -> dict:
    events = _http(agent, "GET", "/v1/event/list") or []
    ev = events[-1]
    return {k: ev[k] for k in ("Name", "Payload", "NodeFilter", "ServiceFilter", "TagFilter")}


def alive(agent: ConsulAgent) -> bool:
    return bool(_http(agent, "GET", "/v1/status/leader"))


def _table(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()[1:]]


def same_kv_detailed(js: Any, text: str) -> None:
    (entry,) = js
    fields = dict(re.split(r"\s+", line, maxsplit=1) for line in text.strip().splitlines())
    assert fields["Key"] == entry["Key"]
    assert fields["Value"] == base64.b64decode(entry["Value"] or "").decode()
    for name in ("Flags", "CreateIndex", "ModifyIndex", "LockIndex"):
        assert int(fields[name]) == entry[name]
    assert fields["Session"] == (entry.get("Session") or "-")


def same_kv_recurse(js: Any, text: str) -> None:
    lines = text.strip().splitlines()
    assert lines == [f"{e['Key']}:{base64.b64decode(e['Value'] or '').decode()}" for e in js]


def same_lines(js: Any, text: str) -> None:
    assert text.strip().splitlines() == list(js)


def same_json(js: Any, text: str) -> None:
    assert json.loads(text) == js


def same_members(js: Any, text: str) -> None:
    rows = _table(text)
    assert [(r[0], r[1], r[2]) for r in rows] == [(m["Name"], f"{m['Addr']}:{m['Port']}", "alive") for m in js]
    for row, m in zip(rows, js, strict=True):
        shown = dict(t.split("=", 1) for t in row[3].split(","))
        assert shown == {k: ("<all>" if k == "segment" and v == "" else v) for k, v in m["Tags"].items()}


def same_services(js: Any, text: str) -> None:
    rows = [line.split() for line in text.strip().splitlines()]
    assert {r[0]: (r[1].split(",") if len(r) > 1 else []) for r in rows} == {k: sorted(v) for k, v in js.items()}


def same_nodes(js: Any, text: str) -> None:
    rows = _table(text)
    assert [r[:4] for r in rows] == [[n["Node"], n["ID"], n["Address"], n["Datacenter"]] for n in js]


def same_peers(js: Any, text: str) -> None:
    rows = _table(text)
    want = [
        [s["Node"], s["ID"], s["Address"], "leader" if s["Leader"] else "follower", str(s["Voter"]).lower()]
        for s in js["Servers"]
    ]
    assert [r[:5] for r in rows] == want


def same_autopilot(js: Any, text: str) -> None:
    fields = dict(line.split(" = ", 1) for line in text.strip().splitlines())
    for key, value in js.items():
        if key.endswith("Index"):
            continue
        shown = fields[key]
        if isinstance(value, bool):
            assert shown == str(value).lower(), key
        elif isinstance(value, str):
            assert shown in (value, json.dumps(value)), key
        else:
            assert shown == str(value), key


def absent(js: Any, text: str) -> None:
    assert js is None and text == ""


# -- the cases ---------------------------------------------------------------------------------


@dataclass
class Case:
    row: str  # the EQUIVALENTS row it exercises
    method: str
    path: str
    body: bytes | None = None
    setup: list[tuple[str, str, str | None]] = field(default_factory=list)
    same: Callable[[Any, str], None] | None = None  # reads: compare the curl's JSON with the CLI's text
    state: Callable[[ConsulAgent], Any] | None = None  # writes: the state both must leave
    fails: bool = False  # both must fail (and leave the same state)

    @property
    def id(self) -> str:
        return f"{self.row}:{self.method} {self.path}"[:80]


AUTOPILOT = {
    "CleanupDeadServers": False,
    "LastContactThreshold": "300ms",
    "MaxTrailingLogs": 300,
    "MinQuorum": 0,
    "ServerStabilizationTime": "7s",
    "RedundancyZoneTag": "",
    "DisableUpgradeMigration": False,
    "UpgradeVersionTag": "",
}
SVC = json.dumps({"ID": "web-1", "Name": "web", "Tags": ["v2", "blue"], "Port": 8080})

CASES = [
    Case("kv-get", "GET", f"/v1/kv/{P}a", setup=[("PUT", f"/v1/kv/{P}a?flags=7", "it's $x")], same=same_kv_detailed),
    Case("kv-get", "GET", f"/v1/kv/{P}a?stale=&dc=dc1", setup=[("PUT", f"/v1/kv/{P}a", "v")], same=same_kv_detailed),
    Case("kv-get", "GET", f"/v1/kv/{P}missing", same=absent),
    Case(
        "kv-get",
        "GET",
        f"/v1/kv/{P}r?recurse=",
        setup=[("PUT", f"/v1/kv/{P}r/1", "one"), ("PUT", f"/v1/kv/{P}r/2", "two")],
        same=same_kv_recurse,
    ),
    Case(
        "kv-get",
        "GET",
        f"/v1/kv/{P}k/?keys=&separator=/",
        setup=[("PUT", f"/v1/kv/{P}k/a/b", "1"), ("PUT", f"/v1/kv/{P}k/c", "2")],
        same=same_lines,
    ),
    Case("kv-put", "PUT", f"/v1/kv/{P}p", body=b"blue", state=kv_state),
    Case("kv-put", "PUT", f"/v1/kv/{P}p?flags=42", body=b"-starts with a dash", state=kv_state),
    Case("kv-put", "PUT", f"/v1/kv/{P}p", body=b"\x00\xffbin\n", state=kv_state),
    Case(
        "kv-put",
        "PUT",
        f"/v1/kv/{P}p?cas={{index}}",
        body=b"new",
        setup=[("PUT", f"/v1/kv/{P}p", "old")],
        state=kv_state,
    ),
    Case(
        "kv-put",
        "PUT",
        f"/v1/kv/{P}p?cas=1",
        body=b"new",
        setup=[("PUT", f"/v1/kv/{P}p", "old")],
        state=kv_state,
        fails=True,
    ),
    Case("kv-put", "PUT", f"/v1/kv/{P}l?acquire={{session}}", body=b"me", state=kv_state),
    Case(
        "kv-put",
        "PUT",
        f"/v1/kv/{P}l?release={{session}}",
        body=b"me",
        setup=[("PUT", f"/v1/kv/{P}l?acquire={{session}}", "me")],
        state=kv_state,
    ),
    Case("kv-delete", "DELETE", f"/v1/kv/{P}d", setup=[("PUT", f"/v1/kv/{P}d", "x")], state=kv_state),
    Case(
        "kv-delete",
        "DELETE",
        f"/v1/kv/{P}d?recurse=",
        setup=[("PUT", f"/v1/kv/{P}d/1", "x"), ("PUT", f"/v1/kv/{P}dz", "y")],
        state=kv_state,
    ),
    Case("kv-delete", "DELETE", f"/v1/kv/{P}d?cas={{index}}", setup=[("PUT", f"/v1/kv/{P}d", "x")], state=kv_state),
    Case("kv-delete", "DELETE", f"/v1/kv/{P}d?cas=1", setup=[("PUT", f"/v1/kv/{P}d", "x")], state=kv_state, fails=True),
    Case("event-fire", "PUT", "/v1/event/fire/foundation:deploys", body=b'{"v":1}', state=last_event),
    Case("event-fire", "PUT", "/v1/event/fire/bare?node=.%2A", state=last_event),
    Case(
        "event-list",
        "GET",
        "/v1/event/list?name=foundation:deploys",
        same=same_json,
        setup=[("PUT", "/v1/event/fire/foundation:deploys", "x")],
    ),
    Case("members", "GET", "/v1/agent/members", same=same_members),
    Case(
        "catalog-services",
        "GET",
        "/v1/catalog/services?stale=",
        same=same_services,
        setup=[("PUT", "/v1/agent/service/register", SVC)],
    ),
    Case("catalog-nodes", "GET", "/v1/catalog/nodes", same=same_nodes),
    Case("catalog-datacenters", "GET", "/v1/catalog/datacenters", same=same_lines),
    Case("raft-list-peers", "GET", "/v1/operator/raft/configuration?stale=", same=same_peers),
    Case("autopilot-get", "GET", "/v1/operator/autopilot/configuration", same=same_autopilot),
    Case(
        "autopilot-set",
        "PUT",
        "/v1/operator/autopilot/configuration",
        body=json.dumps(AUTOPILOT).encode(),
        state=autopilot_state,
    ),
    Case("reload", "PUT", "/v1/agent/reload", state=alive),
    Case("force-leave", "PUT", "/v1/agent/force-leave/no-such-node", state=alive, fails=True),
    Case("join", "PUT", "/v1/agent/join/{serf}", state=lambda a: len(_http(a, "GET", "/v1/agent/members"))),
    Case(
        "service-deregister",
        "PUT",
        "/v1/agent/service/deregister/web-1",
        setup=[("PUT", "/v1/agent/service/register", SVC)],
        state=services_state,
    ),
    Case("leave", "PUT", "/v1/agent/leave", state=None),  # its own agents: see test_leave
]


def test_every_row_of_the_table_has_a_case() -> None:
    assert {c.row for c in CASES} == {row.name for row in render.EQUIVALENTS}


@pytest.fixture(scope="module")
def session_id(consul_agent: ConsulAgent) -> str:
    import time

    deadline = time.monotonic() + 30
    while True:  # right after the election the node may not be registered yet (500 on session create)
        try:
            return _http(consul_agent, "PUT", "/v1/session/create", json.dumps({"Name": "equiv", "TTL": "600s"}))["ID"]
        except urllib.error.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _prepare(case: Case, agent: ConsulAgent, session: str) -> None:
    _http(agent, "DELETE", f"/v1/kv/{P}?recurse")
    _http(agent, "PUT", "/v1/agent/service/deregister/web-1")
    for method, path, body in case.setup:
        _http(agent, method, path.format(session=session), body)


def _op(case: Case, agent: ConsulAgent, session: str) -> RawOperation:
    """The request, its placeholders filled from the agent's state now (session, serf address, an index)."""
    serf = "127.0.0.1:{}".format(_http(agent, "GET", "/v1/agent/self")["Member"]["Port"])
    entries = _http(agent, "GET", f"/v1/kv/{P}?recurse") or [{"ModifyIndex": 0}]
    index = entries[0]["ModifyIndex"]
    url = agent.http_addr + case.path.format(session=session, serf=serf, index=index)
    return RawOperation(kind="consul-http", method=case.method, url=url, body=case.body)


@pytest.mark.parametrize("case", [c for c in CASES if c.row != "leave"], ids=lambda c: c.id)
def test_equivalent_does_what_the_curl_does(case: Case, consul_agent: ConsulAgent, session_id: str) -> None:
    _prepare(case, consul_agent, session_id)
    op = _op(case, consul_agent, session_id)
    cli = render.consul_cli(op)
    assert cli and cli.startswith(("consul ", "printf ")), cli
    assert "****" not in cli
    via_curl = _bash(render.curl(op), consul_agent)
    if case.same is not None:  # a read
        data = json.loads(via_curl.stdout) if via_curl.returncode == 0 else None
        via_cli = _bash(cli, consul_agent)
        assert (via_curl.returncode == 0) == (via_cli.returncode == 0), (via_curl.stderr, via_cli.stderr)
        case.same(data, via_cli.stdout if via_cli.returncode == 0 else "")
        return
    after_curl = case.state(consul_agent)
    _prepare(case, consul_agent, session_id)
    via_cli = _bash(render.consul_cli(_op(case, consul_agent, session_id)) or "false", consul_agent)
    after_cli = case.state(consul_agent)
    ok_curl = via_curl.returncode == 0 and via_curl.stdout.strip() != "false"
    ok_cli = via_cli.returncode == 0
    assert ok_curl == ok_cli == (not case.fails), (cli, via_curl.stdout, via_curl.stderr, via_cli.stderr)
    assert after_curl == after_cli


def test_leave(consul_bin: str, tmp_path) -> None:
    """`consul leave` and PUT /v1/agent/leave: the agent leaves and exits, both ways."""
    results = []
    for n, use_cli in enumerate((False, True)):
        agent = start_agent(base_dir=tmp_path / f"a{n}")
        try:
            op = RawOperation(kind="consul-http", method="PUT", url=agent.http_addr + "/v1/agent/leave")
            line = render.consul_cli(op) if use_cli else render.curl(op)
            assert line
            proc = _bash(line, agent)
            code = agent.proc.wait(timeout=30)
            results.append((proc.returncode, code))
        finally:
            agent.close()
    assert results[0] == results[1] == (0, 0)


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/v1/agent/metrics", None),  # was `consul debug -capture=metrics`: a different thing
        ("GET", "/v1/agent/self", None),  # `consul info` shows only its Stats part
        ("GET", "/v1/catalog/service/web", None),  # `catalog nodes -service` drops ports and tags
        ("GET", "/v1/kv/a?index=12&wait=5s", None),  # a blocking query waits; the CLI does not
        ("GET", "/v1/kv/a?consistent=", None),
        ("GET", "/v1/agent/members?wan=1", None),
        ("GET", "/v1/health/service/web?passing=1", None),
        ("PUT", "/v1/session/create", b"{}"),
        ("PUT", "/v1/event/fire/x", b"\x00binary"),
        ("PUT", "/v1/operator/autopilot/configuration", b'{"CleanupDeadServers": true}'),  # PUT replaces it all
        ("PUT", "/v1/agent/force-leave/-h", None),
        ("PUT", "/v1/kv/-k", b"v"),
        ("PUT", "/v1/kv/a?cas=0", b"v"),  # only-if-absent: `kv put -cas -modify-index=0` is refused by the CLI
        ("DELETE", "/v1/kv/a?cas=0", None),
    ],
)
def test_no_near_misses(method: str, path: str, body: bytes | None) -> None:
    op = RawOperation(kind="consul-http", method=method, url="http://127.0.0.1:8500" + path, body=body)
    assert render.consul_cli(op) is None
