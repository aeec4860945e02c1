"""`status`, `metrics`, `optimize` against real Consul: each rule's condition built for real, --apply makes it go away.

Clusters here are several real Consul agents on loopback (distinct ports), with
gossip tuned for fast failure detection so a SIGKILLed agent is "failed" in
about a second. The healthy cluster mirrors what `foundation up` writes
(gossip encryption on, raft_multiplier 1).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.lab import procs
from tests.lab.consul import consul_path, free_ports, http_get

pytestmark = pytest.mark.timeout(150)
ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "foundation_cli" / "schemas"


# ----------------------------------------------------------------------------------------------
# A small loopback cluster


class LoopCluster:
    """``servers`` Consul servers (and optional clients) on 127.0.0.1, each on its own ports."""

    def __init__(self, servers: int, *, encrypt: bool = False, raft_multiplier: int = 1, name: str = "h") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="foundation-health-"))
        self.key = base64.b64encode(os.urandom(32)).decode() if encrypt else None
        self.raft_multiplier = raft_multiplier
        self.name = name
        self.nservers = servers
        self.agents: dict[str, dict] = {}
        procs.register(self)
        try:
            for i in range(servers):
                self._start(f"{name}-server-{i}", server=True)
            self.wait_leader()
        except BaseException:
            self.close()
            raise

    @property
    def http_addr(self) -> str:
        return self.agents[f"{self.name}-server-0"]["http"]

    def _start(self, node: str, *, server: bool) -> dict:
        http, serf_lan, serf_wan, rpc = free_ports(4)
        join = [a["serf"] for a in self.agents.values() if a["server"]]
        config = {
            "server": server,
            "node_name": node,
            "datacenter": "dc1",
            "data_dir": str(self.dir / node),
            "bind_addr": "127.0.0.1",
            "advertise_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "ports": {"http": http, "serf_lan": serf_lan, "serf_wan": serf_wan, "server": rpc, "dns": -1, "grpc": -1},
            "retry_join": join,
            "retry_interval": "1s",
            "disable_update_check": True,
            "disable_host_node_id": True,
            "log_level": "warn",
            "leave_on_terminate": False,
            "performance": {"raft_multiplier": self.raft_multiplier},
            # Test-only: detect a killed agent in about a second.
            "gossip_lan": {"probe_interval": "200ms", "probe_timeout": "100ms", "suspicion_mult": 2},
        }
        if server:
            config["bootstrap_expect"] = self.nservers
        if self.key:
            config["encrypt"] = self.key
        path = self.dir / f"{node}.json"
        path.write_text(json.dumps(config))
        log = open(self.dir / f"{node}.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                [consul_path() or "consul", "agent", f"-config-file={path}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=procs.die_with_parent,
                env={k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")},
            )
        finally:
            log.close()
        agent = {"proc": proc, "http": f"http://127.0.0.1:{http}", "serf": f"127.0.0.1:{serf_lan}", "server": server}
        self.agents[node] = agent
        return agent

    def start_client(self, node: str) -> None:
        self._start(node, server=False)
        self.wait_member(node, 1)

    def kill(self, node: str) -> None:
        """SIGKILL one agent: the others see it fail."""
        proc = self.agents[node]["proc"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def members(self) -> dict[str, int]:
        status, body = http_get(self.http_addr + "/v1/agent/members")
        return {m["Name"]: m["Status"] for m in json.loads(body)} if status == 200 else {}

    def wait_member(self, node: str, status: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.members().get(node) == status:
                return
            time.sleep(0.1)
        raise AssertionError(f"{node} did not reach serf status {status}: {self.members()}")

    def wait_leader(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = http_get(self.http_addr + "/v1/status/leader")
            if status == 200 and body.strip() not in (b"", b'""'):
                status, body = http_get(self.http_addr + "/v1/operator/raft/configuration")
                full = status == 200 and len(json.loads(body)["Servers"]) == self.nservers
                if full and http_get(self.http_addr + "/v1/kv/probe")[0] in (200, 404):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"no leader: {(self.dir / f'{self.name}-server-0.log').read_text(errors='replace')[-2000:]}")

    def close(self) -> None:
        for agent in self.agents.values():
            procs.stop_process(agent["proc"], timeout=5)
        procs.unregister(self)
        shutil.rmtree(self.dir, ignore_errors=True)


def put(addr: str, path: str, body: bytes | str = b"") -> bytes:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(addr + path, data=data, method="PUT")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def cli(addr: str, *args: str, stdin: str | None = "", timeout: float = 90) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["CONSUL_HTTP_ADDR"] = addr
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "foundation_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


def optimize_ids(addr: str, *args: str) -> dict[str, dict]:
    res = cli(addr, "optimize", "--json", *args)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    validate(data, "optimize")
    return {r["id"]: r for r in data["recommendations"]}


def validate(data: dict, schema: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(data, json.loads((SCHEMAS / f"{schema}.json").read_text()))


@pytest.fixture(scope="module")
def healthy():
    """Three encrypted servers, like `foundation up` makes them."""
    if not consul_path():
        pytest.skip("consul is not installed")
    cluster = LoopCluster(3, encrypt=True, name="ok")
    try:
        yield cluster
    finally:
        cluster.close()


# ----------------------------------------------------------------------------------------------
# Healthy cluster: status, metrics, no warnings


def test_status_json_text_and_prometheus(healthy):
    res = cli(healthy.http_addr, "status", "--json", "--window", "0.5")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    validate(data, "status")
    assert data["servers"]["count"] == 3 and data["servers"]["voters"] == 3 and data["servers"]["leader"]
    assert data["members"]["by_state"] == {"alive": 3}
    assert data["agent"]["gossip_encrypted"] is True and data["agent"]["raft_multiplier"] == 1.0
    assert data["reads"]["health_checks"]["url"].endswith("/v1/health/state/any?stale=")

    text = cli(healthy.http_addr, "status", "--window", "0")
    assert text.returncode == 0, text.stderr
    assert "servers 3 (3 voters)" in text.stdout and "members 3: alive 3" in text.stdout

    for args in (("metrics", "--window", "0"), ("status", "--prometheus", "--window", "0")):
        prom = cli(healthy.http_addr, *args)
        assert prom.returncode == 0, prom.stderr
        assert "foundation_servers 3" in prom.stdout.splitlines()
        assert 'foundation_members{state="alive"} 3' in prom.stdout.splitlines()


def test_healthy_cluster_yields_no_warnings(healthy):
    res = cli(healthy.http_addr, "optimize", "--json", "--window", "0.5")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    validate(data, "optimize")
    assert {r["id"]: r["severity"] for r in data["recommendations"] if r["severity"] != "info"} == {}
    # No warning because nothing was read or a rule crashed would be a false "healthy".
    assert data["rule_errors"] == {} and data["read_errors"] == {}, (data["rule_errors"], data["read_errors"])


def test_flapping_check_found_then_gone(healthy):
    addr = healthy.http_addr
    put(addr, "/v1/agent/check/register", json.dumps({"ID": "flappy", "Name": "flappy", "TTL": "30s"}))
    stop = threading.Event()

    def flip() -> None:
        state = 0
        while not stop.is_set():
            put(addr, f"/v1/agent/check/{'pass' if state else 'fail'}/flappy")
            state ^= 1
            stop.wait(0.15)

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    try:
        found = optimize_ids(addr, "--window", "2")
    finally:
        stop.set()
        thread.join(5)
    rec = found.get("checks.flapping:ok-server-0/flappy")
    assert rec is not None, list(found)
    assert rec["severity"] == "warning" and rec["applies"] == "live" and not rec["auto"]
    assert any(e["read"] and "/v1/health/state/any" in e["read"]["curl"] for e in rec["evidence"])
    put(addr, "/v1/agent/check/deregister/flappy")
    assert "checks.flapping:ok-server-0/flappy" not in optimize_ids(addr, "--window", "0.5")


def test_failed_member_force_leave_applied(healthy):
    addr = healthy.http_addr
    healthy.start_client("ok-client")
    healthy.kill("ok-client")
    healthy.wait_member("ok-client", 4)
    assert "members.failed:ok-client" in optimize_ids(addr, "--window", "0")

    # No terminal and no --yes: refuse, change nothing.
    refused = cli(addr, "optimize", "--apply", "--window", "0", stdin="")
    assert refused.returncode == 2, refused.stderr
    assert "refusing to apply" in refused.stderr and "Traceback" not in refused.stderr
    assert healthy.members()["ok-client"] == 4

    # --dry-run: the script, nothing sent.
    dry = cli(addr, "optimize", "--apply", "--yes", "--dry-run", "--window", "0")
    assert dry.returncode == 0, dry.stderr
    assert '-X PUT "${CONSUL_HTTP_ADDR}/v1/agent/force-leave/ok-client"' in dry.stdout
    assert "# consul: consul force-leave ok-client" in dry.stdout
    assert healthy.members()["ok-client"] == 4

    done = cli(addr, "optimize", "--apply", "--yes", "--only", "members.failed", "--window", "0")
    assert done.returncode == 0, done.stderr
    assert "applied members.failed:ok-client: confirmed" in done.stdout
    assert healthy.members()["ok-client"] == 3  # left
    assert "members.failed:ok-client" not in optimize_ids(addr, "--window", "0")


def test_dead_server_with_cleanup_off_applied(healthy):
    """Last on the shared cluster: it kills a server."""
    addr = healthy.http_addr
    put(addr, "/v1/operator/autopilot/configuration", json.dumps({"CleanupDeadServers": False}))
    # Kill a follower that is not the agent we talk to (no election in the way).
    status, body = http_get(addr + "/v1/operator/raft/configuration")
    victim = next(s["Node"] for s in json.loads(body)["Servers"] if not s["Leader"] and s["Node"] != "ok-server-0")
    healthy.kill(victim)
    healthy.wait_member(victim, 4)
    deadline = time.monotonic() + 20
    found = optimize_ids(addr, "--window", "0")
    while "autopilot.cleanup_dead_servers" not in found and time.monotonic() < deadline:
        time.sleep(1)
        found = optimize_ids(addr, "--window", "0")
    if "autopilot.cleanup_dead_servers" not in found:
        snap = json.loads(cli(addr, "status", "--json", "--window", "0").stdout)
        pytest.fail(f"no finding; servers: {json.dumps(snap['servers'])[:1500]} errors: {snap['errors']}")
    assert found["autopilot.cleanup_dead_servers"]["auto"] is True
    res = cli(
        addr, "optimize", "--apply", "--yes", "--json", "--only", "autopilot.cleanup_dead_servers", "--window", "0"
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    validate(data, "optimize")
    assert [(a["id"], a["status"], a["confirmed"]) for a in data["applied"]] == [
        ("autopilot.cleanup_dead_servers", "applied", True)
    ]
    status, body = http_get(addr + "/v1/operator/autopilot/configuration")
    assert json.loads(body)["CleanupDeadServers"] is True
    assert "autopilot.cleanup_dead_servers" not in optimize_ids(addr, "--window", "0")


# ----------------------------------------------------------------------------------------------
# Two servers, raft_multiplier 2, gossip unencrypted


def test_two_servers_slow_raft_unencrypted():
    if not consul_path():
        pytest.skip("consul is not installed")
    cluster = LoopCluster(2, raft_multiplier=2, name="two")
    try:
        found = optimize_ids(cluster.http_addr, "--window", "0")
    finally:
        cluster.close()
    assert found["servers.count"]["severity"] == "warning"
    assert found["raft.multiplier:two-server-0"]["applies"] == "rolling-restart"
    assert "raft_multiplier = 1" in found["raft.multiplier:two-server-0"]["changes"][0]["config"]
    assert found["security.gossip_encryption"]["severity"] == "info"  # loopback only: a note


# ----------------------------------------------------------------------------------------------
# Single agent: singleton timing, events, the agent task, bad input


SPEC = json.dumps({"name": "cron", "mode": "singleton", "command": ["sleep", "1000"]})


def _singleton_condition(agent) -> None:
    put(agent.http_addr, "/v1/kv/foundation/services/cron", SPEC)
    put(agent.http_addr, "/v1/kv/foundation/config/singleton.lock_delay", "20s")
    put(agent.http_addr, "/v1/kv/foundation/config/singleton.fence_timeout", "1s")


def test_singleton_lock_delay_applied_and_dry_run_replays(consul_bin):
    from tests.lab.consul import start_agent

    applied, replayed = start_agent(), start_agent()
    try:
        for agent in (applied, replayed):
            _singleton_condition(agent)
            assert optimize_ids(agent.http_addr, "--window", "0")["singleton.failover"]["auto"] is True

        res = cli(applied.http_addr, "optimize", "--apply", "--yes", "--window", "0")
        assert res.returncode == 0, res.stderr
        assert "applied singleton.failover: confirmed" in res.stdout
        assert applied.kv_get("foundation/config/singleton.lock_delay") == b"2.5s"

        dry = cli(replayed.http_addr, "optimize", "--apply", "--yes", "--dry-run", "--window", "0")
        assert dry.returncode == 0, dry.stderr
        assert replayed.kv_get("foundation/config/singleton.lock_delay") == b"20s"  # nothing sent
        run = subprocess.run(["bash", "-c", dry.stdout], env=replayed.env, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        assert replayed.kv_dump("foundation/") == applied.kv_dump("foundation/")

        # An unsafe pair (fence timeout too long for the lock-delay) is critical and fixed live.
        put(applied.http_addr, "/v1/kv/foundation/config/singleton.fence_timeout", "4s")
        found = optimize_ids(applied.http_addr, "--window", "0")
        assert found["singleton.timing"]["severity"] == "critical"
        res = cli(applied.http_addr, "optimize", "--apply", "--yes", "--only", "singleton.timing", "--window", "0")
        assert res.returncode == 0, res.stderr
        assert "singleton.timing" not in optimize_ids(applied.http_addr, "--window", "0")
    finally:
        applied.close()
        replayed.close()


def test_events_near_limit_and_high_rate(consul_agent):
    addr = consul_agent.http_addr
    put(addr, "/v1/event/fire/big", "x" * 350)
    stop = threading.Event()

    def fire() -> None:
        while not stop.is_set():
            put(addr, "/v1/event/fire/chatty", "tick")
            stop.wait(0.05)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    try:
        found = optimize_ids(addr, "--window", "1.5")
    finally:
        stop.set()
        thread.join(5)
    assert found["events.payload"]["severity"] == "info"
    assert found["events.rate"]["severity"] == "warning"


def test_agent_task_stores_report_and_optimize_last(consul_agent, tmp_path):
    import logging

    from foundation_cli.agent import optimizer_task
    from foundation_cli.raw.recorder import Recorder
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    addr = consul_agent.http_addr
    missing = cli(addr, "optimize", "--last")
    # Exit 0 only when another test of this module stored a report on the shared agent already.
    assert missing.returncode in (0, 5), missing.stderr
    assert missing.returncode == 0 or "no stored optimizer report" in missing.stderr, missing.stderr

    settings = Settings(consul_addr=addr)

    class Ctx:
        node = "test-node"
        logger = logging.getLogger("test.optimizer")
        recorder = Recorder()

        def __init__(self):
            self.settings = settings

        def consul(self):
            return consul_tool.connect(settings, recorder=self.recorder)

    ctx = Ctx()
    assert optimizer_task.is_leader_agent(ctx.consul()) is True
    stored = optimizer_task.run_once(ctx, window=0.2)
    assert stored is not None and stored["stored_by"] == "test-node"
    res = cli(addr, "optimize", "--last", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    validate(data, "optimize")
    assert data["stored_by"] == "test-node"
    text = cli(addr, "optimize", "--last")
    assert text.returncode == 0 and "stored report from test-node" in text.stdout

    # The interval comes from cluster-wide config, with a floor.
    put(addr, "/v1/kv/foundation/config/optimizer.interval", "2m")
    assert optimizer_task.interval(ctx.consul(), env={}) == 120.0
    put(addr, "/v1/kv/foundation/config/optimizer.interval", "1s")
    assert optimizer_task.interval(ctx.consul(), env={}) == optimizer_task.MIN_INTERVAL


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("status", "--window", "-1"), 2, "--window"),
        (("optimize", "--yes"), 2, "--yes and --only only make sense with --apply"),
        (("optimize", "--last", "--apply"), 2, "cannot be combined"),
        (("metrics", "--window", "9999"), 2, "invalid --window"),
    ],
)
def test_bad_input_one_line_error(consul_agent, args, code, needle):
    res = cli(consul_agent.http_addr, *args)
    assert res.returncode == code, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr


def test_unreachable_consul_exit_3():
    (port,) = free_ports(1)
    res = cli(f"http://127.0.0.1:{port}", "status", "--window", "0")
    assert res.returncode == 3, res.stderr
    assert res.stderr.startswith("error: cannot read Consul") and "Traceback" not in res.stderr


# ----------------------------------------------------------------------------------------------
# A cluster built by `foundation up --local`: no warnings, and its node agent stores a report


def test_up_local_cluster_no_warnings_and_agent_stores_report(tmp_path):
    if not consul_path():
        pytest.skip("consul is not installed")
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(
        FOUNDATION_DATA_DIR=str(tmp_path / "data"),
        FOUNDATION_STATE_DIR=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        NO_COLOR="1",
        FOUNDATION_OPTIMIZER_DELAY="0.5",
        FOUNDATION_OPTIMIZER_WINDOW="0.5",
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "foundation_cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        up = run("up", "--local", "--http-port", str(port), "--json")
        assert up.returncode == 0, up.stderr
        cluster_id = json.loads(up.stdout)["cluster_id"]
        res = run("optimize", "--json", "--window", "0.5")  # finds the cluster through the state file
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout)
        validate(data, "optimize")
        assert data["cluster_id"] == cluster_id
        assert [r["id"] for r in data["recommendations"] if r["severity"] != "info"] == []
        assert data["rule_errors"] == {} and data["read_errors"] == {}, (data["rule_errors"], data["read_errors"])

        deadline = time.monotonic() + 60
        last = run("optimize", "--last", "--json")
        while last.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            last = run("optimize", "--last", "--json")
        assert last.returncode == 0, last.stderr
        stored = json.loads(last.stdout)
        validate(stored, "optimize")
        assert stored["cluster_id"] == cluster_id and stored["stored_by"]
    finally:
        run("down", "--local", "--purge")
        for name in ("agent", "consul"):  # never leave a process behind
            pid_file = tmp_path / "data" / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass


def test_acl_cluster_with_and_without_token(consul_agent_acl):
    addr = consul_agent_acl.http_addr
    ok = cli(addr, "status", "--json", "--window", "0", "--token", consul_agent_acl.token)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    validate(data, "status")
    assert data["agent"]["acls_enabled"] is True and data["errors"] == {}
    assert consul_agent_acl.token not in ok.stdout + ok.stderr
    found = optimize_ids(addr, "--window", "0", "--token", consul_agent_acl.token)
    assert "security.acls" not in found
    denied = cli(addr, "status", "--window", "0")
    assert denied.returncode == 4, denied.stderr
    assert "refused" in denied.stderr and "Traceback" not in denied.stderr


def test_status_watch_refreshes_until_interrupted(consul_agent):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(CONSUL_HTTP_ADDR=consul_agent.http_addr, NO_COLOR="1", COLUMNS="100")
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundation_cli", "status", "--watch", "--interval", "0.5", "--window", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        time.sleep(6)  # start-up and a few refreshes
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "servers 1 (1 voters)" in out and "Traceback" not in err
