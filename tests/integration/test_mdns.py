"""mDNS on the lab bridge: real zeroconf advertisers in namespace hosts, browsed from the root namespace.

Multicast stays on the lab bridge: every zeroconf here is bound to a lab
address (hosts: their own IP; the browser: the bridge IP).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from foundation_cli.core import keys
from foundation_cli.raw.recorder import Recorder, use_recorder
from foundation_cli.tools import mdns as mdns_tool

pytestmark = pytest.mark.lab

PY = sys.executable


def foundation(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop(mdns_tool.ENV_INTERFACE, None)
    full_env.update(env or {})
    return subprocess.run(
        [PY, "-m", "foundation_cli", *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def advertise(host, *extra: str) -> subprocess.Popen:
    return host.popen(
        [PY, "-m", "foundation_cli", "advertise", "--interface", host.ip, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_announced(procs: list[subprocess.Popen], timeout: float = 20) -> None:
    """Each advertiser prints its 'announcing …' line once zeroconf has probed and announced."""
    for p in procs:
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and p.poll() is None:
            line = p.stdout.readline()
            if line.startswith("announcing"):
                break
        assert line.startswith("announcing"), f"advertiser did not announce: {p.poll()} {p.stderr.read()}"


def stop_all(procs: list[subprocess.Popen]) -> list[int]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=10))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(-9)
    return codes


def by_addr(rows: list[dict]) -> dict[str, dict]:
    return {r["address"]: r for r in rows}


def test_five_advertisers_found_other_cluster_listed_goodbye_seen(make_lab):
    lab = make_lab(5)
    procs = [advertise(lab.hosts[0], "--explain", "--no-color")] + [advertise(h) for h in lab.hosts[1:4]]
    procs.append(advertise(lab.hosts[4], "--cluster-id", "someone-else", "--role", "server", "--datacenter", "dc7"))
    try:
        wait_announced(procs)
        r = foundation("discover-hosts", "--interface", lab.bridge_ip, "--json", "--expect", "5", "--timeout", "10")
        assert r.returncode == 0, r.stderr
        rows = by_addr(json.loads(r.stdout))
        assert set(rows) == {h.ip for h in lab.hosts}
        for h in lab.hosts[:4]:
            assert rows[h.ip]["status"] == "unclaimed" and rows[h.ip]["node"] == h.name
            assert rows[h.ip]["ssh_port"] == 22 and rows[h.ip]["version"]
        other = rows[lab.hosts[4].ip]
        assert (other["status"], other["cluster_id"], other["role"]) == ("other-cluster", "someone-else", "server")

        # The table and --explain (the avahi-browse equivalent) for people.
        r = foundation("discover-hosts", "-i", lab.bridge, "--expect", "5", "-t", "10", "--explain", "--no-color")
        assert r.returncode == 0, r.stderr
        assert "other cluster" in r.stdout and "unclaimed" in r.stdout
        assert "avahi-browse -rpt _foundation._tcp" in r.stderr

        # A browser that keeps running sees the goodbye when an advertiser is stopped.
        browser = mdns_tool.Browser(mdns_tool.resolve_binding([lab.bridge_ip]))
        with use_recorder(Recorder()):
            browser.start()
            try:
                seen = set()
                deadline = time.monotonic() + 10
                while len(seen) < 5 and time.monotonic() < deadline:
                    item = browser.next(deadline - time.monotonic())
                    if item and not item[1]:
                        seen.add(item[0].instance)
                gone = next(n for n in seen if n.startswith(f"{lab.hosts[0].name}@"))
                assert stop_all(procs[:1]) == [0]
                removed = False
                deadline = time.monotonic() + 10
                while not removed and time.monotonic() < deadline:
                    item = browser.next(deadline - time.monotonic())
                    removed = bool(item and item[1] and item[0].instance == gone)
                assert removed, "no goodbye seen after SIGTERM"
                # --explain showed the announcement and the goodbye as raw operations.
                explained = procs[0].stderr.read()
                assert f"avahi-publish-service {lab.hosts[0].name}@{lab.hosts[0].ip} _foundation._tcp 22" in explained
                assert "goodbye (TTL 0)" in explained and f"withdrew {lab.hosts[0].name}@" in explained
            finally:
                browser.close()
    finally:
        stop_all(procs)


HOSTILE = textwrap.dedent(
    """
    import asyncio, sys
    from zeroconf import ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf
    ip = sys.argv[1]
    T = "_foundation._tcp.local."
    def txt(d):
        out = b""
        for k, v in d.items():
            e = (k + "=").encode() + (v if isinstance(v, bytes) else v.encode())
            out += bytes([len(e)]) + e
        return out
    good = {"txtvers": "1", "node": "good", "role": "none", "version": "0.1.0", "ssh": "22"}
    records = {
        "good": txt(good),
        "utf8": txt({**good, "node": b"\\xff\\xfe\\xfd"}),
        "huge": txt({**good, **{f"k{i}": "v" * 200 for i in range(8)}}),
        "missing": txt({"node": "lonely"}),
        "spoof": txt({**good, "node": "spoof", "role": "server", "cluster": "ours-123", "dc": "dc1"}),
        "markup": txt({**good, "node": "[bold red]boom[/]"}),
    }
    async def main():
        azc = AsyncZeroconf(interfaces=[ip])
        waits = []
        for name, text in records.items():
            info = ServiceInfo(T, f"{name}.{T}", port=22, properties=text, server=f"{name}-h.local.", parsed_addresses=[ip])
            waits.append(await azc.async_register_service(info, cooperating_responders=True))
        await asyncio.gather(*waits)
        print("registered", flush=True)
        try:
            await asyncio.sleep(60)
        finally:
            await azc.async_close()
    asyncio.run(main())
    """
)


def test_hostile_announcements_are_shown_invalid_without_crashing(make_lab, consul_agent, tmp_path):
    lab = make_lab(1)
    host = lab.hosts[0]
    script = host.write("/tmp/hostile.py", HOSTILE)
    assert script.exists()
    proc = host.popen([PY, "/tmp/hostile.py", host.ip], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "registered", proc.stderr.read()
        # This machine "operates" cluster ours-123 whose Consul (loopback) does not know the spoofer.
        state = tmp_path / "state"
        state.mkdir()
        (state / "state.json").write_text(json.dumps({"cluster_id": "ours-123", "datacenter": "dc1"}))
        env = {"FOUNDATION_STATE_DIR": str(state), "CONSUL_HTTP_ADDR": consul_agent.http_addr}
        r = foundation("discover-hosts", "-i", lab.bridge_ip, "--json", "--expect", "6", "-t", "10", env=env)
        assert r.returncode == 0, r.stderr
        rows = {row["extra"]["instance"]: row for row in json.loads(r.stdout)}
        assert rows["good"]["status"] == "unclaimed"
        problems = {name: (rows[name]["status"], rows[name]["problems"] or "") for name in rows}
        assert problems["utf8"][0] == "invalid" and "UTF-8" in problems["utf8"][1]
        assert problems["missing"][0] == "invalid" and "missing role" in problems["missing"][1]
        assert problems["spoof"][0] == "invalid" and "not a member" in problems["spoof"][1]
        assert problems["markup"][0] == "invalid" and "invalid characters" in problems["markup"][1]
        # ~1.6 kB of TXT still fits one mDNS packet (zeroconf sends up to ~9 kB): it arrives and is refused.
        assert problems["huge"][0] == "invalid" and "too large" in problems["huge"][1]
        # The human table survives the same input (rich markup in names must not break it).
        r = foundation("discover-hosts", "-i", lab.bridge_ip, "--expect", "6", "-t", "10", "--no-color", env=env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert "invalid" in r.stdout and "[bold red]" not in r.stdout
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_dry_run_advertise_prints_the_avahi_command_and_sends_nothing(make_lab):
    lab = make_lab(1)
    host = lab.hosts[0]
    r = host.exec(
        f"{PY} -m foundation_cli advertise --interface {host.ip} --ssh-port 2222 --dry-run", env={"NO_COLOR": "1"}
    )
    assert "avahi-publish-service" in r.stdout and "_foundation._tcp 2222" in r.stdout
    assert "ssh=2222" in r.stdout and "dns-sd -R" in r.stdout
    r = foundation("discover-hosts", "-i", lab.bridge_ip, "--json", "-t", "1")
    assert json.loads(r.stdout or "[]") == []


def test_once_announces_and_exits_without_goodbye(make_lab):
    lab = make_lab(1)
    host = lab.hosts[0]
    browser = mdns_tool.Browser(mdns_tool.resolve_binding([lab.bridge_ip]))
    with use_recorder(Recorder()):
        browser.start()
        try:
            r = host.exec(f"{PY} -m foundation_cli advertise --interface {host.ip} --once", timeout=30)
            assert r.stdout.startswith(f"announcing {host.name}@{host.ip}")
            events = []
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                item = browser.next(deadline - time.monotonic())
                if item:
                    events.append((item[0].instance, item[1]))
            name = f"{host.name}@{host.ip}._foundation._tcp.local."
            assert (name, False) in events and (name, True) not in events
        finally:
            browser.close()


CONSUL_FLAGS = ["-hcl", "disable_update_check = true", "-dns-port=-1", "-grpc-port=-1"]


def _wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200 and resp.read().strip() not in (b"", b'""'):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready")


def test_agent_task_records_newcomers_and_auto_joins_claimants(make_lab, consul_bin, tmp_path, monkeypatch):
    """Agent task in this process: server on host 1; host 2 a fresh box; host 3 a client claiming our id."""
    import threading

    from foundation_cli.agent import advertise as task
    from foundation_cli.agent.context import AgentContext, AgentRecorder
    from foundation_cli.core import strategies
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    lab = make_lab(3)
    server, fresh, claimant = lab.hosts
    consul = [consul_bin, "agent", *CONSUL_FLAGS, "-data-dir=/tmp/consul"]
    server.popen([*consul, "-server", "-bootstrap-expect=1", f"-bind={server.ip}", f"-client={server.ip}", "-node=s1"])
    addr = f"http://{server.ip}:8500"
    _wait_http(addr + "/v1/status/leader")
    settings = Settings(consul_addr=addr)
    client = consul_tool.connect(settings)
    client.kv.put(keys.CLUSTER, json.dumps({"cluster_id": "c-42", "datacenter": "dc1", "auto_join": True}))
    claimant.popen([*consul, f"-bind={claimant.ip}", f"-client={claimant.ip}", "-node=c3"])
    _wait_http(f"http://{claimant.ip}:8500/v1/agent/self")
    procs = [
        advertise(fresh),
        advertise(claimant, "--cluster-id", "c-42", "--role", "client", "--datacenter", "dc1", "--node", "c3"),
    ]
    monkeypatch.setenv(mdns_tool.ENV_INTERFACE, lab.bridge_ip)
    ctx = AgentContext(
        node="root-agent",
        settings=settings,
        logger=logging.getLogger("test.advertise"),
        recorder=AgentRecorder(),
        data_dir=tmp_path,
        agent_service_id="foundation-agent",
        agent_check_id="foundation-agent-ttl",
    )
    stop = threading.Event()
    crashed: list[BaseException] = []

    def run_task() -> None:
        try:
            task.run(ctx, stop)
        except BaseException as exc:  # the assertion at the end reports it: a crashed task must fail the test
            crashed.append(exc)

    thread = threading.Thread(target=run_task, daemon=True)
    try:
        wait_announced(procs)
        thread.start()
        deadline = time.monotonic() + 20
        discovered: dict = {}
        members: set = set()
        while time.monotonic() < deadline:
            discovered = {d["address"]: d for d in strategies.read_discovered(client)}  # what `status` reads
            members = {m["Name"] for m in client.agent.members()}
            if fresh.ip in discovered and "c3" in members:
                break
            time.sleep(0.3)
        assert discovered[fresh.ip]["status"] == "unclaimed" and discovered[fresh.ip]["node"] == fresh.name
        assert "c3" in members, f"claimant not auto-joined: {members}"
        # A goodbye removes the record.
        stop_all(procs[:1])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _i, entry = client.kv.get(keys.DISCOVERED + fresh.ip)
            if entry is None:
                break
            time.sleep(0.2)
        assert entry is None
    finally:
        stop.set()
        thread.join(timeout=15)
        stop_all(procs)
    assert not thread.is_alive()
    assert crashed == [], f"the agent task crashed: {crashed!r}"


def test_agent_task_without_interface_does_nothing(monkeypatch, tmp_path):
    import threading

    from foundation_cli.agent import advertise as task
    from foundation_cli.agent.context import AgentContext, AgentRecorder
    from foundation_cli.settings import Settings

    monkeypatch.delenv(mdns_tool.ENV_INTERFACE, raising=False)
    seen = []
    recorder = AgentRecorder()
    recorder.subscribe(seen.append)
    ctx = AgentContext(
        node="n",
        settings=Settings(consul_addr="http://127.0.0.1:1"),
        logger=logging.getLogger("test.advertise"),
        recorder=recorder,
        data_dir=tmp_path,
        agent_service_id="a",
        agent_check_id="b",
    )
    task.run(ctx, threading.Event())  # returns at once, touches nothing
    assert seen == []


@pytest.mark.timeout(240)
def test_mortal_up_bootstraps_the_unclaimed_advertisers_and_never_the_other_cluster(make_lab, consul_bin, tmp_path):
    """No foundation.yaml: `up` browses the named interface, bootstraps the 3 unclaimed hosts, not the 4th."""

    lab = make_lab(4)
    fresh, other = lab.hosts[:3], lab.hosts[3]
    procs = [advertise(h) for h in fresh]
    procs.append(advertise(other, "--cluster-id", "not-ours", "--role", "server", "--datacenter", "dc1"))
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host 198.18.0.*\n  User root\n  IdentityFile {lab.ssh_key}\n  UserKnownHostsFile {lab.known_hosts}\n"
    )
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "FOUNDATION_STATE_DIR": str(tmp_path / "state"),
        mdns_tool.ENV_INTERFACE: lab.bridge_ip,
        "NO_COLOR": "1",
    }
    help_text = foundation("up", "--help", env=env).stdout
    args = ["up", "--json"] + (["--yes"] if "--yes" in help_text else [])
    try:
        wait_announced(procs)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
        full_env.pop(mdns_tool.ENV_INTERFACE, None)
        full_env.update(env)
        r = subprocess.run(
            [PY, "-m", "foundation_cli", *args],
            cwd=tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=200,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        # The cluster is closed (HTTPS + ACLs): ask it through Foundation, with the CA and token up kept.
        m = subprocess.run(
            [PY, "-m", "foundation_cli", "consul", "members"],
            cwd=tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert m.returncode == 0, m.stderr
        addrs = [line.split()[1].rsplit(":", 1)[0] for line in m.stdout.splitlines()[1:] if line.strip()]
        assert sorted(addrs) == sorted(h.ip for h in fresh)
        # The other cluster's machine was never touched: no consul, nothing written under /etc/foundation.
        from tests.lab.slots import netns_pids

        comms = []
        for pid in netns_pids(other.netns):
            try:
                comms.append(Path(f"/proc/{pid}/comm").read_text().strip())
            except OSError:
                pass
        assert "sshd" in comms and "consul" not in comms, comms
        assert not other.path("/etc/foundation").exists()
    finally:
        stop_all(procs)


def _wait_no_tentative(lab, timeout: float = 10) -> None:
    """IPv6 link-local addresses are usable once duplicate address detection is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = subprocess.run(
            ["ip", "-6", "addr", "show", "dev", lab.bridge, "tentative"], capture_output=True, text=True
        ).stdout.strip()
        busy += "".join(h.exec("ip -6 addr show dev eth0 tentative").stdout.strip() for h in lab.hosts)
        if not busy:
            return
        time.sleep(0.2)
    raise AssertionError("IPv6 link-local addresses still tentative")


def test_ipv6_only_advertise_and_browse(make_lab):
    lab = make_lab(2)
    _wait_no_tentative(lab)
    procs = [
        h.popen(
            [PY, "-m", "foundation_cli", "advertise", "--interface", "eth0", "--ipv6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for h in lab.hosts
    ]
    try:
        wait_announced(procs)
        r = foundation("discover-hosts", "-i", lab.bridge, "--ipv6", "--json", "--expect", "2", "-t", "10")
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert sorted(row["node"] for row in rows) == [h.name for h in lab.hosts]
        for row in rows:
            # Link-local: the address keeps its scope so SSH can use it.
            assert row["address"].startswith("fe80::") and "%" in row["address"]
            assert row["status"] == "unclaimed"
    finally:
        stop_all(procs)
