"""Day-2 operations against one real Consul agent and one real node agent (no lab needed).

Fencing tokens (in the singleton's environment, shown by ps, larger for every
new holder), drain/undrain on one node (the instance stops, the node enters
Consul maintenance, the mark survives an agent restart, undrain brings it
back), and the snapshot round trip (a value written, saved, changed,
restored, back). Moves between nodes are in test_day2_lab.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from tests.integration.test_placement_support import (
    agent_passing,
    cli,
    http_json,
    pids_running,
    ps,
    shared_dir,
    start_local_agent,
    stop_process,
    wait_for,
)

TOKEN_PRINTER = r"""
import os, sys, time
with open(sys.argv[1], "a") as fh:
    fh.write(os.environ.get("FOUNDATION_FENCING_TOKEN", "none") + "\n")
while True:
    time.sleep(1)
"""


@pytest.fixture
def work_dir():
    d = shared_dir("foundation-day2-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _maintenance(addr: str, node: str) -> bool:
    return any(c["CheckID"] == "_node_maintenance" for c in http_json(f"{addr}/v1/health/node/{node}") or [])


@pytest.mark.timeout(150)
def test_fencing_token_and_drain_on_one_node(fresh_consul, tmp_path, work_dir):
    addr, env = fresh_consul.http_addr, fresh_consul.env
    script = work_dir / "tok.py"
    script.write_text(TOKEN_PRINTER)
    tokens = work_dir / "tokens"
    data = tmp_path / "data"
    agent = start_local_agent(addr, data, tmp_path / "agent.log")
    agent2 = None
    try:
        node = wait_for(lambda: agent_passing(addr), 20, "the agent to register")[0]
        cli(["start-singleton", "tok", "--", "python3", str(script), str(tokens)], env)
        first = int(wait_for(lambda: tokens.exists() and tokens.read_text().split(), 10, "a token")[0])
        lock = http_json(f"{addr}/v1/kv/foundation/locks/tok")[0]
        assert first == lock["ModifyIndex"] and lock["Session"]
        row = ps(env, "tok")[0]
        assert row["fencing"] == first
        assert str(first) in cli(["ps"], env).stdout

        # A new holder (the agent restarted: new session, new acquire) gets a larger token.
        stop_process(agent)
        agent = start_local_agent(addr, data, tmp_path / "agent2.log")
        second = int(wait_for(lambda: len(tokens.read_text().split()) == 2 and tokens.read_text().split(), 30, "2")[1])
        assert second > first

        # Drain: the instance stops, the node enters maintenance; the mark survives an agent restart.
        dry = cli(["drain", node, "--dry-run"], env)
        assert f"/v1/kv/foundation/drain/{node}" in dry.stdout
        assert http_json(f"{addr}/v1/kv/foundation/drain/{node}") is None
        out = cli(["drain", node, "--reason", "test", "--explain", "--timeout", "5"], env, check=False)
        # One node: the singleton has nowhere to go (partial, exit 7), but the node is drained.
        assert out.returncode == 7 and "tok not running elsewhere" in out.stderr
        assert "/v1/agent/maintenance?enable=true" in out.stderr
        assert wait_for(lambda: _maintenance(addr, node), 10, "maintenance")
        assert pids_running(str(tokens)) == []
        assert http_json(f"{addr}/v1/kv/foundation/drain/{node}?raw=1")["reason"] == "test"
        stop_process(agent)
        agent = start_local_agent(addr, data, tmp_path / "agent3.log")
        wait_for(lambda: "drained" in (tmp_path / "agent3.log").read_text(), 20, "the agent to start drained")
        assert _maintenance(addr, node)
        assert pids_running(str(tokens)) == []
        assert [r["state"] for r in ps(env, "tok")] == ["pending"]
        st = json.loads(cli(["status", "--json", "--window", "0"], env).stdout)
        assert st["drained"][0]["node"] == node

        out = cli(["undrain", node], env)
        assert f"{node} undrained" in out.stdout
        assert not _maintenance(addr, node)
        # The copy writes its token as it starts: wait for that line, not only for its process.
        wait_for(lambda: pids_running(str(tokens)), 20, "the singleton back after undrain")
        after = wait_for(lambda: len(tokens.read_text().split()) > 2 and tokens.read_text().split(), 20, "its token")
        assert int(after[-1]) > second
        cli(["stop", "tok"], env)
    finally:
        for proc in (agent, agent2):
            stop_process(proc)
        for pid in pids_running(str(tokens)):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(150)
def test_snapshot_round_trip_and_scheduled(fresh_consul, tmp_path):
    addr, env = fresh_consul.http_addr, fresh_consul.env
    snap = tmp_path / "backup.snap"
    cli(["kv", "put", "app/mode", "blue"], env)
    out = cli(["snapshot", "save", str(snap), "--explain"], env)
    assert "saved snapshot" in out.stdout and "/v1/snapshot" in out.stderr
    assert oct(snap.stat().st_mode & 0o777) == "0o600" and snap.read_bytes()[:2] == b"\x1f\x8b"
    cli(["kv", "put", "app/mode", "green"], env)
    assert cli(["kv", "get", "app/mode"], env).stdout.strip() == "green"

    refused = cli(["snapshot", "restore", str(snap)], env, check=False)  # no terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    dry = cli(["snapshot", "restore", str(snap), "--dry-run"], env)
    assert "/v1/snapshot" in dry.stdout
    assert cli(["kv", "get", "app/mode"], env).stdout.strip() == "green"
    cli(["snapshot", "restore", str(snap), "--yes"], env)
    assert wait_for(lambda: cli(["kv", "get", "app/mode"], env).stdout.strip() == "blue", 10, "the value back")
    bad = tmp_path / "bad.snap"
    bad.write_text("nope")
    assert cli(["snapshot", "restore", str(bad), "--yes"], env, check=False).returncode == 2

    # Scheduled: the leader's agent (here the only one) takes them every 10 s and keeps 1.
    assert "no scheduled snapshot" in cli(["snapshot", "save", str(snap), "--from-scheduled"], env, check=False).stderr
    cli(["config", "set", "snapshot.keep", "1", "--cluster-wide"], env)
    cli(["config", "set", "snapshot.interval", "10s", "--cluster-wide"], env)
    agent = start_local_agent(addr, tmp_path / "data", tmp_path / "agent.log")
    try:
        entries = wait_for(
            lambda: json.loads(cli(["snapshot", "list", "--json"], env).stdout),
            60,
            "a scheduled snapshot",
        )
        cli(["kv", "put", "app/mode", "red"], env)
        out = cli(["snapshot", "save", str(snap), "--from-scheduled", "--id", entries[-1]["id"]], env)
        assert f"scheduled snapshot {entries[-1]['id']}" in out.stdout
        cli(["snapshot", "restore", str(snap), "--yes"], env)
        assert wait_for(lambda: cli(["kv", "get", "app/mode"], env).stdout.strip() == "blue", 10, "blue again")
        # Rotation keeps 1: the next one replaces it, and the file of the rotated-out one goes too.
        wait_for(
            lambda: (
                (e := json.loads(cli(["snapshot", "list", "--json"], env).stdout)) and e[0]["id"] != entries[0]["id"]
            ),
            60,
            "a rotation",
        )
        files = list((tmp_path / "data").glob("nodes/*/snapshots/*.snap"))
        assert 1 <= len(files) <= 2, files
    finally:
        stop_process(agent)


@pytest.mark.timeout(150)
def test_scheduled_snapshot_needs_the_snapshot_token_not_the_agents(consul_agent_acl, tmp_path, monkeypatch):
    """With ACLs (default deny) the node agent's own token gets 403 on GET /v1/snapshot; with the
    snapshot token `up` gives servers (policy foundation-snapshot) the scheduled round takes one."""
    import logging
    from types import SimpleNamespace

    from foundation_cli.agent import snapshot_task
    from foundation_cli.core import acl
    from foundation_cli.core.live_settings import LIVE
    from foundation_cli.errors import PermissionDeniedError
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    mgmt = consul_agent_acl.token
    admin = consul_tool.connect(Settings(consul_addr=consul_agent_acl.http_addr, token=mgmt))
    node = admin.agent.self()["Config"]["NodeName"]
    tokens = acl.NodeTokens(consul=acl.new_secret(), agent=acl.new_secret())
    acl.ensure_node(admin, mgmt, node=node, datacenter="dc1", tokens=tokens)
    agent = consul_tool.connect(Settings(consul_addr=consul_agent_acl.http_addr, token=tokens.agent))
    ctx = SimpleNamespace(
        node=node,
        node_dir=lambda: tmp_path / "node",
        logger=logging.getLogger("test"),
        settings=Settings(consul_addr=consul_agent_acl.http_addr, token=tokens.agent),
        recorder=None,
    )
    token_file = tmp_path / "snapshot.token"
    monkeypatch.setenv(snapshot_task.TOKEN_FILE_ENV, str(token_file))
    LIVE.set("snapshot.interval", 10.0, 1)
    try:
        with pytest.raises(PermissionDeniedError) as refused:
            snapshot_task.run_once(ctx, agent)
        assert "no snapshot token in" in snapshot_task._hint(refused.value)
        secret = acl.new_secret()
        assert acl.ensure_snapshot_token(admin, mgmt, secret)
        assert not acl.ensure_snapshot_token(admin, mgmt, secret)  # idempotent: known, not made again
        token_file.write_text(secret + "\n")
        taken = snapshot_task.run_once(ctx, agent)
        assert taken is not None and taken.node == node
        archive = (tmp_path / "node" / "snapshots" / f"{taken.id}.snap").read_bytes()
        assert archive[:2] == b"\x1f\x8b" and len(archive) == taken.size
        with pytest.raises(PermissionDeniedError):  # the agent's own token still cannot, nor write the index
            agent.snapshot.save()
        with pytest.raises(PermissionDeniedError):
            agent.kv.put("foundation/snapshots/20000101T000000Z", "{}")
        policy = admin.acl.policy_read_by_name(acl.SNAPSHOT_POLICY, token=mgmt)
        assert policy.status == 200 and policy.body["Rules"] == acl.snapshot_rules()
    finally:
        LIVE.clear()


def test_optimizer_announces_findings_and_status_summarises(fresh_consul, tmp_path):
    """The leader's agent announces new findings on _optimizer (live and in history); status has a line."""
    import subprocess
    import sys

    addr, env = fresh_consul.http_addr, fresh_consul.env
    listener = subprocess.Popen(
        [sys.executable, "-m", "foundation_cli", "listen", "_optimizer", "--count", "1", "--timeout", "90s", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    agent = start_local_agent(
        addr, tmp_path / "data", tmp_path / "agent.log", FOUNDATION_OPTIMIZER_DELAY="1", FOUNDATION_OPTIMIZER_WINDOW="1"
    )
    try:
        out, err = listener.communicate(timeout=100)
        assert listener.returncode == 0, err
        news = json.loads(out.splitlines()[0])["data"]  # JSON messages come parsed
        assert news["kind"] == "optimizer" and news["new"] and news["report"] == "foundation/optimizer/last"
        assert all(f["id"] and f["severity"] for f in news["new"])
        again = cli(["listen", "_optimizer", "--since", "1h", "--count", "1", "--timeout", "10s"], env)
        assert "optimizer" in again.stdout
        st = json.loads(cli(["status", "--json", "--window", "0"], env).stdout)
        assert st["optimizer"]["findings"] == len(news["new"]) and st["optimizer"]["stored_by"]
        assert "optimizer " in cli(["status", "--window", "0"], env).stdout
    finally:
        listener.kill()
        stop_process(agent)


def test_broadcast_at_file(consul_agent, tmp_path):
    env = consul_agent.env
    payload = tmp_path / "release.json"
    payload.write_text('{"version": 42}')
    cli(["broadcast", "files", f"@{payload}", "--durable"], env)
    cli(["broadcast", "files", "@@literal", "--durable"], env)
    got = [
        json.loads(line)
        for line in cli(["listen", "files", "--since", "1h", "--count", "2", "--json"], env).stdout.splitlines()
    ]
    assert got[0]["content_type"] == "application/json" and got[0]["data"] == {"version": 42}
    assert got[1]["data"] == "@literal"
    missing = cli(["broadcast", "files", f"@{tmp_path}/nope"], env, check=False)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_waiting_machines_listed(consul_agent):
    env = consul_agent.env
    assert "no machine is waiting" in cli(["discover-hosts", "--waiting"], env).stderr
    entry = {"node": "pi-new", "status": "unclaimed", "seen_by": "n1", "last_seen": 1, "datacenter": "dc1"}
    cli(["consul", "kv", "put", "foundation/discovered/198.18.0.250", json.dumps(entry)], env)
    try:
        out = cli(["discover-hosts", "--waiting"], env)
        assert "198.18.0.250" in out.stdout and "pi-new" in out.stdout and "unclaimed" in out.stdout
        waiting = json.loads(cli(["discover-hosts", "--waiting", "--json"], env).stdout)
        assert waiting[0]["address"] == "198.18.0.250"
        assert "waiting to join 1: 198.18.0.250" in cli(["status", "--window", "0"], env).stdout
    finally:
        cli(["consul", "kv", "delete", "foundation/discovered/198.18.0.250"], env)
