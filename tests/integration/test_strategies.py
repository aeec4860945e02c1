"""The dns strategy against a real DNS server (dnsmasq on loopback) and the consul strategy against a real agent."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from foundation_cli.core import cluster_config, strategies
from foundation_cli.errors import UnreachableError
from foundation_cli.raw.recorder import Recorder, use_recorder
from foundation_cli.settings import Settings

DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dnsmasq(tmp_path):
    """dnsmasq answering only our records on 127.0.0.1:<free port>; killed after the test."""
    if not DNSMASQ:
        pytest.fail("dnsmasq missing: run scripts/install-test-deps.sh")
    port = free_udp_port()
    pid_file = tmp_path / "dnsmasq.pid"
    argv = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-dhcp-interface=",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--pid-file={pid_file}",
        "--user=root",
        "--local=/lab.test/",
        "--local=/far.test/",
        "--host-record=n1.lab.test,198.18.0.21",
        "--host-record=n2.lab.test,198.18.0.22",
        "--host-record=hosts.lab.test,198.18.0.31,fd00:18::31",
        "--srv-host=_foundation._tcp.lab.test,n1.lab.test,22,10,5",
        "--srv-host=_foundation._tcp.lab.test,n2.lab.test,2222,20,5",
        "--srv-host=_ssh._tcp.far.test,nowhere.lab.test,22,0,0",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"dnsmasq exited: {proc.stderr.read().decode()}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.settimeout(0.2)
                    s.connect(("127.0.0.1", port))
                    from foundation_cli.tools import dns

                    s.send(dns.build_query("n1.lab.test", "A", 1))
                    if s.recv(512):
                        break
                except OSError:
                    time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def wizard(strategy: str, options: str) -> cluster_config.ClusterConfig:
    return cluster_config.parse(f"mode: wizard\ncluster:\n  strategy: {strategy}\n  options: {options}\n")


def test_dns_srv_records(dnsmasq):
    cfg = wizard("dns", f"{{name: _foundation._tcp.lab.test, nameserver: '{dnsmasq}'}}")
    recorder = Recorder()
    with use_recorder(recorder):
        hosts = strategies.find_hosts(cfg, Settings())
    assert [(h.address, h.name, h.port, h.source) for h in hosts] == [
        ("198.18.0.21", "n1", 22, "dns"),
        ("198.18.0.22", "n2", 2222, "dns"),
    ]
    port = dnsmasq.rsplit(":", 1)[1]
    lines = [op.command for op in recorder.operations]
    assert lines[0] == f"dig @127.0.0.1 -p {port} +short SRV _foundation._tcp.lab.test"
    assert all(op.kind == "dns" and not op.is_write for op in recorder.operations)


def test_dns_a_and_aaaa_records(dnsmasq):
    cfg = wizard("dns", f"{{name: hosts.lab.test, nameserver: '{dnsmasq}'}}")
    hosts = strategies.find_hosts(cfg, Settings())
    assert sorted(h.address for h in hosts) == ["198.18.0.31", "fd00:18::31"]
    cfg = wizard("dns", f"{{name: hosts.lab.test, nameserver: '{dnsmasq}', type: AAAA}}")
    assert [h.address for h in strategies.find_hosts(cfg, Settings())] == ["fd00:18::31"]


def test_dns_unknown_name_and_unresolvable_target_give_no_hosts(dnsmasq):
    assert strategies.dns_hosts("nothing.lab.test", nameserver=dnsmasq) == []
    assert strategies.dns_hosts("_ssh._tcp.far.test", nameserver=dnsmasq) == []


def test_dns_dead_nameserver_is_a_one_line_unreachable_error():
    port = free_udp_port()
    with pytest.raises(UnreachableError, match=f"to 127.0.0.1:{port} failed"):
        strategies.dns_hosts("_foundation._tcp.lab.test", nameserver=f"127.0.0.1:{port}")


def test_consul_strategy_lists_the_servers_of_an_existing_cluster(consul_agent):
    cfg = wizard("consul", f"{{consul: '{consul_agent.http_addr}'}}")
    recorder = Recorder()
    with use_recorder(recorder):
        found = strategies.discover(cfg, Settings())
    assert len(found) == 1
    (server,) = found
    assert (server.address, server.role, server.source) == ("127.0.0.1", "server", "consul")
    assert server.name and server.datacenter
    assert server.extra["join_only"] == "true"
    # Existing servers are join targets, never bootstrapped: not claimable, but find_hosts hands them to `up`.
    assert strategies.claimable(found) == []
    assert strategies.find_hosts(cfg, Settings()) == found
    urls = [op.url for op in recorder.operations]
    assert any(u.endswith("/v1/status/peers") for u in urls) and any("/v1/catalog/nodes" in u for u in urls)


def test_consul_strategy_unreachable_address():
    port = free_udp_port()
    cfg = wizard("consul", f"{{consul: '127.0.0.1:{port}'}}")
    with pytest.raises(UnreachableError):
        strategies.find_hosts(cfg, Settings())
