"""`foundation up --local` / `down --local`: a real one-node Consul + the node agent on this machine.

Each test uses its own data/state dirs and a random HTTP port, so nothing collides
with other tests or with a user's cluster at 8500.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.lab.consul import port_free, reserve_port

pytestmark = pytest.mark.timeout(180)


def _free_base_port() -> int:
    """HTTP port of a local cluster, and the two after it (server, serf): free and reserved for this process."""
    for _ in range(200):
        port = random.randint(20000, 29000)
        trio = (port, port + 1, port + 2)
        if all(port_free(p) for p in trio) and all(reserve_port(p) for p in trio):
            return port
    raise RuntimeError("no free port")


class LocalEnv:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_base_port()
        self.data = tmp / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
        self.env.update(
            FOUNDATION_DATA_DIR=str(self.data),
            FOUNDATION_STATE_DIR=str(tmp / "state"),
            XDG_CONFIG_HOME=str(tmp / "xdg"),
            NO_COLOR="1",
        )
        self.cwd = tmp

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, check: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "foundation_cli", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    @property
    def token(self) -> str | None:
        """The management token `up --local` keeps in the state file (ACLs are on by default)."""
        try:
            return json.loads((self.cwd / "state" / "state.json").read_text()).get("token")
        except (OSError, ValueError):
            return None

    def kv(self, key: str) -> dict | None:
        req = urllib.request.Request(f"{self.addr}/v1/kv/{key}?raw", headers={"X-Consul-Token": self.token or ""})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    def cleanup(self) -> None:
        self.run("down", "--local", "--purge")
        for name in ("agent", "consul"):  # belt and braces: never leave a process behind
            pid_file = self.data / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), 9)
                except (OSError, ValueError):
                    pass


@pytest.fixture
def local(tmp_path):
    env = LocalEnv(tmp_path)
    yield env
    env.cleanup()


def test_up_local_is_idempotent_and_down_stops_everything(local):
    first = local.run("up", "--local", "--http-port", str(local.port), "--json", check=True)
    result = json.loads(first.stdout)
    assert result["components"]["consul"] == "started"
    record = local.kv("foundation/cluster")
    assert record["mode"] == "local" and record["cluster_id"] == result["cluster_id"]
    state = json.loads((local.cwd / "state" / "state.json").read_text())
    assert state["consul_http_addr"] == local.addr
    assert oct((local.cwd / "state" / "state.json").stat().st_mode & 0o777) == "0o600"

    second = json.loads(local.run("up", "--local", "--http-port", str(local.port), "--json", check=True).stdout)
    assert second["components"]["consul"] == "unchanged"
    assert second["components"]["cluster record"] == "unchanged"
    assert second["cluster_id"] == result["cluster_id"]

    assert second["components"]["agent"] == "unchanged"  # its token files are unchanged

    # Later commands find the cluster through the state file, with no flags.
    members = local.run("consul", "members", check=True)
    assert "alive" in members.stdout

    # Scheduled snapshots work under the default ACLs: the agent holds the snapshot token (0600).
    snap_token = local.data / "snapshot.token"
    assert snap_token.read_text().strip() == state["snapshot_token"] and snap_token.stat().st_mode & 0o077 == 0
    local.run("config", "set", "snapshot.interval", "10s", "--cluster-wide", check=True)
    deadline = time.monotonic() + 60
    while not json.loads(local.run("snapshot", "list", "--json", check=True).stdout):
        assert time.monotonic() < deadline, "no scheduled snapshot within 60 s"
        time.sleep(1)

    down = local.run("down", "--local", "--explain", check=True)
    assert "kill -TERM" in down.stderr
    consul_pid = local.data / "consul.pid"
    assert not consul_pid.exists()
    assert local.kv("foundation/cluster") is None


def test_port_taken_by_something_else_is_refused(local):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", local.port))
        squatter.listen(1)
        proc = local.run("up", "--local", "--http-port", str(local.port))
    assert proc.returncode == 6
    assert "is in use by something that is not Foundation's local cluster" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (local.data / "consul.pid").exists()


def test_dry_run_script_replays_to_the_same_state(local):
    # With ACLs (the default) a script cannot replay to the same state: the bootstrap makes the
    # management token and the node tokens are secrets the script does not print. Replay the
    # open variant (ACLs turned off in wizard mode); test_local_acl covers the secure default.
    (local.cwd / "foundation.yaml").write_text("consul:\n  acl:\n    enabled: false\n")
    dry = local.run("up", "--local", "--http-port", str(local.port), "--dry-run", check=True)
    assert not local.data.exists(), "dry run must not touch the data dir"
    script = dry.stdout
    assert "consul agent" in script and "foundation/cluster" in script
    replay = subprocess.run(["bash", "-c", script], env=local.env, capture_output=True, text=True, timeout=90)
    assert replay.returncode == 0, replay.stderr
    record = local.kv("foundation/cluster")
    assert record and record["mode"] == "local" and record["http_addr"] == local.addr
    # The real command now finds the replayed cluster and the same config: consul unchanged.
    again = json.loads(local.run("up", "--local", "--http-port", str(local.port), "--json", check=True).stdout)
    assert again["components"]["consul"] == "unchanged"
