"""Placement against a real Consul agent with a real node agent process (no lab needed).

One Consul node, one `foundation agent run`: the singleton lifecycle (start,
ps, logs, crash restart, restart, agent SIGKILL → fence guard + clean
replacement, replicated adoption, SIGTERM handover), spec validation errors,
and the --dry-run replay of every placement write command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

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
    witness_runs,
    write_witness,
)


@pytest.fixture
def witness_dir():
    d = shared_dir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _running(env, name):
    return [r for r in ps(env, name) if r["state"] == "running"]


@pytest.mark.timeout(150)
def test_agent_runs_singleton_and_replicated_lifecycle(fresh_consul, tmp_path, witness_dir):
    addr = fresh_consul.http_addr
    env = fresh_consul.env
    script, log = write_witness(witness_dir)
    data = tmp_path / "data"
    agent = start_local_agent(addr, data, tmp_path / "agent.log")
    agent2 = agent3 = None
    try:
        node = wait_for(lambda: agent_passing(addr), 20, "the agent to register")[0]

        out = cli(
            ["start-singleton", "wit", "--tag", "t1", "--port", "8123", "--", "python3", str(script), str(log)], env
        )
        assert f"wit running on {node} (pid " in out.stdout
        rows = ps(env, "wit")
        assert len(rows) == 1 and rows[0]["state"] == "running" and rows[0]["health"] == "passing"
        first_pid = rows[0]["pid"]
        svc = http_json(f"{addr}/v1/catalog/service/wit")
        assert svc[0]["ServicePort"] == 8123 and svc[0]["ServiceTags"] == ["t1"]
        assert "witness started" in cli(["logs", "wit"], env).stdout

        # The process dies: the agent restarts it (restart=always, backoff).
        os.kill(first_pid, signal.SIGKILL)
        row = wait_for(lambda: [r for r in _running(env, "wit") if r["pid"] != first_pid], 20, "a restart")[0]
        assert row["restarts"] == 1

        out = cli(["restart", "wit"], env)
        assert "generation 2" in out.stdout
        assert len(pids_running(str(log))) == 1

        port = addr.rsplit(":", 1)[1]
        cli(
            [
                "start-replicated",
                "rep",
                "--env",
                "X=1",
                "--check-tcp",
                f"127.0.0.1:{port}",
                "--",
                "python3",
                str(script),
                str(log),
            ],
            env,
        )
        rep_pid = _running(env, "rep")[0]["pid"]
        checks = {c["CheckID"]: c for c in http_json(f"{addr}/v1/health/checks/rep")}
        assert checks["foundation:rep"]["Status"] == "passing"  # process alive (TTL the agent keeps passing)
        assert checks["foundation:rep:tcp"]["Type"] == "tcp"

        # Agent SIGKILLed: its fence guard stops the singleton at once (the replicated one keeps running).
        wit_pid = _running(env, "wit")[0]["pid"]
        agent.kill()
        agent.wait(5)
        wait_for(lambda: wit_pid not in pids_running(str(log)), 5, "the fence guard to stop the singleton")
        assert rep_pid in pids_running(str(log))

        # A new agent adopts the replicated instance and replaces the singleton cleanly.
        agent2 = start_local_agent(addr, data, tmp_path / "agent2.log")
        wait_for(lambda: [r for r in _running(env, "wit") if r["pid"] != wit_pid], 30, "the singleton back")
        assert _running(env, "rep")[0]["pid"] == rep_pid
        assert len(pids_running(str(log))) == 2  # one singleton + one replicated: never two copies

        # A second agent for the same node refuses to run.
        agent3 = start_local_agent(addr, data, tmp_path / "agent3.log")
        assert agent3.wait(20) != 0
        assert "already running" in (tmp_path / "agent3.log").read_text()

        # SIGTERM: processes stopped, lock released, services and status gone.
        agent2.send_signal(signal.SIGTERM)
        assert agent2.wait(20) == 0
        assert pids_running(str(log)) == []
        lock = http_json(f"{addr}/v1/kv/foundation/locks/wit")
        assert lock and not lock[0].get("Session")
        assert http_json(f"{addr}/v1/kv/foundation/status/?recurse=1") is None
        assert http_json(f"{addr}/v1/catalog/service/wit") == []
        assert agent_passing(addr) == []
        assert all(r.stopped for r in witness_runs(log) if r.pid != first_pid)  # SIGTERM, not SIGKILL

        cli(["stop", "wit"], env)
        cli(["stop", "rep"], env)
        assert ps(env) == []
    finally:
        for proc in (agent, agent2, agent3):
            stop_process(proc)
        for pid in pids_running(str(log)):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["start-singleton", "Bad_Name", "--", "true"], 2, "invalid service name"),
        (["start-singleton", "ok"], 2, "empty command"),
        (["start-replicated", "ok", "--env", "1X=2", "--", "true"], 2, "--env"),
        (["start-singleton", "ok", "--check-tcp", "nope", "--", "true"], 2, "--check-tcp"),
        (["start-singleton", "ok", "--restart", "maybe", "--", "true"], 2, "--restart"),
        (["start-singleton", "existing", "--no-wait", "--", "true"], 6, "cannot silently become singleton"),
        (["stop", "missing"], 5, "no service named"),
        (["ps", "missing"], 5, "no service named"),
    ],
)
def test_bad_input_is_one_line(consul_agent, args, code, needle):
    env = consul_agent.env
    cli(["start-replicated", "existing", "--no-wait", "--", "sleep", "1"], env)
    before = consul_agent.kv_dump("foundation/")
    proc = cli(args, env, check=False)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]) == 1
    assert consul_agent.kv_dump("foundation/") == before


def _replay(script: str, addr: str) -> None:
    subprocess.run(
        ["bash", "-c", script], env={"PATH": os.environ["PATH"], "CONSUL_HTTP_ADDR": addr}, check=True, timeout=30
    )


def test_dry_run_replays_to_the_same_state(fresh_consul, consul_bin, tmp_path):
    """Each write command: its --dry-run script, replayed on a second agent, makes the state the command made."""
    from tests.lab.consul import start_agent

    steps = [
        ["start-singleton", "web", "--no-wait", "--env", "A=1", "--tag", "x", "--", "sleep", "60"],
        ["start-replicated", "rep", "--no-wait", "--node-meta", "role=db", "--", "sh", "-c", "echo 'hi there'"],
        ["start-singleton", "web", "--no-wait", "--", "sleep", "61"],  # changed spec: generation 2
        ["restart", "web", "--no-wait"],
        ["start-singleton", "gone", "--no-wait", "--", "sleep", "60"],
        ["stop", "gone", "--no-wait"],
    ]
    other = start_agent(base_dir=tmp_path / "other")
    try:
        for step in steps:
            cli(step, fresh_consul.env)
            dry = cli(["--dry-run", *step], other.env)
            assert dry.stdout.startswith("#!/usr/bin/env bash"), dry.stdout
            _replay(dry.stdout, other.http_addr)
            assert fresh_consul.kv_dump("foundation/") == other.kv_dump("foundation/"), step
        assert json.loads(fresh_consul.kv_get("foundation/services/web"))["generation"] == 3
    finally:
        other.close()


def test_explain_shows_agent_side_and_raw_equivalent(consul_agent):
    proc = cli(["start-singleton", "expl", "--no-wait", "--explain", "--", "sleep", "60"], consul_agent.env)
    err = proc.stderr
    assert "/v1/kv/foundation/services/expl?cas=0" in err  # the write this command performed
    assert "/v1/session/create" in err and '"LockDelay": "2500ms"' in err and "serfHealth" in err
    assert "foundation/locks/expl?acquire=" in err
    assert "/v1/agent/service/register" in err
    assert "consul lock -n=1 foundation/locks/expl sleep 60" in err
    rows = json.loads(cli(["ps", "expl", "--json"], consul_agent.env).stdout)
    assert rows[0]["lock_key"] == "foundation/locks/expl" and rows[0]["state"] == "pending"
