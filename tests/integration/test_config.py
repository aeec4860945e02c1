"""`foundation config set/get/list/unset` and the agent's config-apply task against a real Consul agent."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from foundation_cli.agent import config_apply
from foundation_cli.core.live_settings import LIVE
from foundation_cli.settings import resolve
from foundation_cli.tools import consul as consul_tool

pytestmark = pytest.mark.timeout(120)


def cli(agent, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "foundation_cli", *args], env=agent.env, capture_output=True, text=True, timeout=timeout
    )


def version_of(agent, key: str) -> int:
    proc = cli(agent, "config", "get", key, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["version"]


def test_set_get_list_unset(consul_agent) -> None:
    proc = cli(consul_agent, "config", "set", "app/feature.x", "on", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["previous_version"] == 0 and result["version"] > 0
    assert consul_agent.kv_get("foundation/config/app/feature.x") == b"on"
    assert cli(consul_agent, "config", "get", "app/feature.x").stdout.strip() == "on"
    listed = json.loads(cli(consul_agent, "config", "list", "--json").stdout)
    assert {"key": "app/feature.x", "value": "on"}.items() <= next(
        e for e in listed if e["key"] == "app/feature.x"
    ).items()
    assert cli(consul_agent, "config", "unset", "app/feature.x").returncode == 0
    proc = cli(consul_agent, "config", "get", "app/feature.x")
    assert proc.returncode == 5 and "not set" in proc.stderr


def test_concurrent_cas_writers_one_wins_one_conflicts(consul_agent) -> None:
    assert cli(consul_agent, "config", "set", "restart.backoff", "1s").returncode == 0
    version = version_of(consul_agent, "restart.backoff")
    # Two writers that both read `version` and race to write.
    argv = [sys.executable, "-m", "foundation_cli", "config", "set", "restart.backoff"]
    procs = [
        subprocess.Popen([*argv, value, "--cas", str(version)], env=consul_agent.env, stderr=subprocess.PIPE, text=True)
        for value in ("2s", "3s")
    ]
    results = [(p.wait(timeout=30), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 6], results
    loser = next(err for code, err in results if code == 6)
    assert loser.startswith("error: config restart.backoff changed since version") and "Traceback" not in loser
    winner_value = ("2s", "3s")[[code for code, _ in results].index(0)]
    assert consul_agent.kv_get("foundation/config/restart.backoff") == winner_value.encode()
    # Without --cas the read version is used: a later writer succeeds normally.
    assert cli(consul_agent, "config", "set", "restart.backoff", "4s").returncode == 0


def test_cluster_wide_is_applied_by_agents_and_shown_in_status(consul_agent) -> None:
    settings = resolve(consul_addr=consul_agent.http_addr, env={})
    stop = threading.Event()
    threads = []
    for node in ("agent-a", "agent-b"):
        ctx = SimpleNamespace(
            node=node, logger=logging.getLogger(f"test.{node}"), consul=lambda **kw: consul_tool.connect(settings, **kw)
        )
        thread = threading.Thread(target=config_apply.run, args=(ctx, stop), daemon=True)
        thread.start()
        threads.append(thread)
    try:
        listener = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "foundation_cli",
                "listen",
                "_control",
                "--json",
                "--count",
                "1",
                "--timeout",
                "20s",
            ],
            env=consul_agent.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "listening on" in listener.stderr.readline()
        proc = cli(consul_agent, "config", "set", "agent.log_level", "debug", "--cluster-wide", "--json")
        assert proc.returncode == 0, proc.stderr
        version = json.loads(proc.stdout)["version"]
        announced = json.loads(listener.communicate(timeout=20)[0])
        assert announced["data"] == {"type": "config", "op": "set", "key": "agent.log_level", "version": version}
        deadline = time.time() + 20
        while time.time() < deadline:
            status = json.loads(cli(consul_agent, "config", "get", "agent.log_level", "--status", "--json").stdout)
            if status["applied"] == 2:
                break
            time.sleep(0.3)
        assert status["version"] == version
        assert {n["node"]: n["state"] for n in status["nodes"]} == {"agent-a": "applied", "agent-b": "applied"}
        assert LIVE.get("agent.log_level") == "debug"
        assert logging.getLogger("foundation.agent").level == logging.DEBUG
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        LIVE.clear()
        logging.getLogger("foundation").setLevel(logging.NOTSET)
        logging.getLogger("foundation.agent").setLevel(logging.NOTSET)
    assert not any(t.is_alive() for t in threads)


def test_dry_run_replays_to_the_same_kv_state(consul_agent, fresh_consul) -> None:
    args = ("config", "set", "replay/key", "value with spaces")
    assert cli(consul_agent, *args).returncode == 0
    dry = cli(fresh_consul, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert fresh_consul.kv_dump("foundation/") == {}
    replay = subprocess.run(
        ["bash", "-c", dry.stdout], env=fresh_consul.env, capture_output=True, text=True, timeout=30
    )
    assert replay.returncode == 0, replay.stderr
    assert fresh_consul.kv_dump("foundation/config/replay/") == consul_agent.kv_dump("foundation/config/replay/")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["set", "bad key", "x"], 2, "invalid config key"),
        (["set", "agent.log_level", "loud"], 2, "invalid value 'loud' for agent.log_level"),
        (["set", "singleton.lock_delay", "500ms"], 2, "unsafe placement timing"),
        (["set", "restart.backoff", "x"], 2, "invalid value"),
        (["set", "bad.cas", "x", "--cas", "99999"], 6, "changed since version 99999"),
        (["unset", "never.set"], 5, "not set"),
        (["get", "never.set"], 5, "not set"),
    ],
)
def test_bad_input_is_one_line_and_stores_nothing(consul_agent, args, code, message) -> None:
    before = consul_agent.kv_dump("foundation/config/")
    proc = cli(consul_agent, "config", *args)
    assert proc.returncode == code and message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith("error:")
    assert consul_agent.kv_dump("foundation/config/") == before
