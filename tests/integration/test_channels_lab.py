"""Channels and cluster-wide config on a real 3-server Consul in the network-namespace lab.

Listeners and agents run inside the lab hosts (`python3 -m foundation_cli …`),
each talking to its own host's Consul agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]
CHECKOUT = Path(__file__).resolve().parents[2]


def cli(addr: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
    env["CONSUL_HTTP_ADDR"] = addr
    return subprocess.run(
        [sys.executable, "-m", "foundation_cli", *args], env=env, input=input, capture_output=True, timeout=60
    )


def host_listen(host, *args: str) -> subprocess.Popen:
    proc = host.popen(
        ["python3", "-m", "foundation_cli", "listen", *args],
        # This checkout's code, not whatever copy is installed on the machine.
        env={"CONSUL_HTTP_ADDR": f"http://{host.ip}:8500", "PYTHONPATH": str(CHECKOUT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stderr.readline().decode()
    assert "listening on" in line, f"{host.name}: {line}"
    return proc


def collect(proc: subprocess.Popen, timeout: float = 60) -> list[dict]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


def test_broadcast_reaches_every_node_once_and_late_listener_catches_up(shared_consul_cluster) -> None:
    cluster = shared_consul_cluster
    listeners = [host_listen(h, "fleet", "--json", "--count", "2", "--timeout", "60s") for h in cluster.hosts]
    big = (b"0123456789abcdef" * 256)[:4096]
    small = cli(cluster.http_addrs[0], "broadcast", "fleet", "hello fleet", "--durable", "--json")
    large = cli(cluster.http_addrs[1], "broadcast", "fleet", "-", "--durable", "--json", input=big)
    assert small.returncode == 0 and large.returncode == 0, (small.stderr, large.stderr)
    sent = [json.loads(small.stdout)["id"], json.loads(large.stdout)["id"]]
    for host, proc in zip(cluster.hosts, listeners, strict=True):
        got = collect(proc)
        assert sorted(m["id"] for m in got) == sorted(sent), host.name  # each exactly once
        by_id = {m["id"]: m for m in got}
        assert by_id[sent[0]]["data"] == "hello fleet"
        assert by_id[sent[1]]["data"] == big.decode() and by_id[sent[1]]["size"] == 4096
    # A listener that starts late replays the durable messages it missed.
    late = host_listen(cluster.hosts[2], "fleet", "--json", "--since", "5m", "--count", "2", "--timeout", "30s")
    replayed = collect(late)
    assert [m["id"] for m in replayed] == sent and {m["via"] for m in replayed} == {"history"}


def test_cluster_wide_config_applied_by_every_agent_and_placed_service_discovered(shared_consul_cluster) -> None:
    cluster = shared_consul_cluster
    agents = [
        h.popen(
            ["python3", "-m", "foundation_cli", "agent", "run", "--node", h.name],
            env={"CONSUL_HTTP_ADDR": f"http://{h.ip}:8500", "PYTHONPATH": str(CHECKOUT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for h in cluster.hosts
    ]
    try:
        proc = cli(cluster.http_addr, "config", "set", "restart.backoff", "3s", "--cluster-wide", "--json")
        assert proc.returncode == 0, proc.stderr
        version = json.loads(proc.stdout)["version"]
        deadline = time.time() + 60
        status: dict = {}
        while time.time() < deadline:
            status = json.loads(cli(cluster.http_addr, "config", "get", "restart.backoff", "--status", "--json").stdout)
            if status["version"] == version and status["applied"] == len(cluster.hosts):
                break
            time.sleep(0.5)
        assert {n["node"]: n["state"] for n in status["nodes"]} == {h.name: "applied" for h in cluster.hosts}

        # discover finds a service Foundation placed, with its health, like any other.
        placed = cli(
            cluster.http_addr, "start-singleton", "labweb", "--port", "7100", "--tag", "lab", "--", "sleep", "600"
        )
        assert placed.returncode == 0, placed.stderr
        deadline = time.time() + 60
        found: dict = {}
        while time.time() < deadline:
            proc = cli(cluster.http_addr, "discover", "labweb", "--passing", "--json")
            found = json.loads(proc.stdout) if proc.returncode == 0 else {}
            if found.get("count") == 1:
                break
            time.sleep(0.5)
        jsonschema.validate(
            found, json.loads(resources.files("foundation_cli").joinpath("schemas/discover.json").read_text())
        )
        (inst,) = found["instances"]
        assert inst["port"] == 7100 and inst["tags"] == ["lab"] and inst["health"] == "passing"
        assert inst["meta"]["foundation_mode"] == "singleton" and inst["node"] in {h.name for h in cluster.hosts}
        assert cli(cluster.http_addr, "stop", "labweb").returncode == 0
    finally:
        for proc in agents:
            proc.terminate()
        for proc in agents:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_node_filter_limits_delivery_to_matching_nodes(shared_consul_cluster) -> None:
    cluster = shared_consul_cluster
    target = cluster.hosts[1]
    listeners = [host_listen(h, "only", "--json", "--count", "1", "--timeout", "6s") for h in cluster.hosts]
    proc = cli(cluster.http_addrs[0], "broadcast", "only", "just you", "--node", f"^{target.name}$")
    assert proc.returncode == 0, proc.stderr
    for host, listener in zip(cluster.hosts, listeners, strict=True):
        out, err = listener.communicate(timeout=30)
        if host is target:
            assert listener.returncode == 0 and json.loads(out)["data"] == "just you", err
        else:
            assert listener.returncode == 1 and out == b"" and b"received 0 of 1" in err


def test_a_burst_beyond_the_agent_buffer_reaches_stalled_listeners_exactly_once(shared_consul_cluster) -> None:
    """460 events reach the agents while each listener's consumer is stalled in its first --exec.

    A Consul agent keeps only the last 256 events: a listener that read the event list between
    two messages lost all but those. Its reader thread keeps reading while the consumer waits, so
    the listener on the sender's own agent (which stores every event it fires) gets all 400 plain
    messages, each once; the one on another node gets every durable message meant for it (read
    from the history if gossip lost its event) and none of those filtered to the first node.
    """
    from foundation_cli.facades.channels import Channels
    from foundation_cli.settings import resolve
    from foundation_cli.tools import consul as consul_tool

    cluster = shared_consul_cluster
    origin, other = cluster.hosts[0], cluster.hosts[2]
    # The first message's command waits for the gate: every later one is read meanwhile, or lost.
    record = 'while [ ! -e /tmp/gate ]; do sleep 0.05; done; echo "$FOUNDATION_MESSAGE_ID" >> /tmp/got'
    plain = host_listen(origin, "burst", "--exec", record, "--count", "400", "--timeout", "120s")
    durable = host_listen(other, "burstdur", "--exec", record, "--timeout", "120s")
    try:
        channels = Channels(consul_tool.connect(resolve(consul_addr=cluster.http_addrs[0], env={})))
        sent, spilled = [], 0
        for i in range(400):
            result = channels.broadcast("burst", (f"m{i} " * 300).encode() if i % 4 == 1 else f"m{i}".encode())
            sent.append(result.id)
            spilled += not result.inline
        kept, elsewhere = [], []
        for i in range(60):  # every 6th only for the origin's node: its event never reaches `other`
            only_origin = i % 6 == 0
            result = channels.broadcast(
                "burstdur", f"d{i}".encode(), durable=True, node=f"^{origin.name}$" if only_origin else None
            )
            (elsewhere if only_origin else kept).append(result.id)
        assert spilled == 100 and len(kept) == 50
        origin.write("/tmp/gate", "")
        other.write("/tmp/gate", "")
        out, err = plain.communicate(timeout=150)
        assert plain.returncode == 0, err.decode()[-2000:]
        got = origin.path("/tmp/got").read_text().split()
        assert len(got) == 400 and sorted(got) == sorted(sent)  # every message, each exactly once
        got_durable: list[str] = []
        for _ in range(600):  # until the 50 are in (at most 60 s), then 3 s more: no filtered one may follow
            path = other.path("/tmp/got")
            got_durable = path.read_text().split() if path.exists() else []
            if len(got_durable) >= 50 or durable.poll() is not None:
                break
            time.sleep(0.1)
        time.sleep(3.0)  # longer than CATCH_UP_AFTER: a wrongly caught-up filtered message would show now
        assert durable.poll() is None, durable.stderr.read().decode()[-2000:]
        got_durable = other.path("/tmp/got").read_text().split()
        assert len(got_durable) == 50 and sorted(got_durable) == sorted(kept) and not set(got_durable) & set(elsewhere)
    finally:
        for proc in (plain, durable):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
