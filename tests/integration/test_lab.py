"""The test lab itself: SSH hosts that look like separate machines, a real Consul cluster, no leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.lab import slots
from tests.lab.netns import Lab
from tests.lab.procs import pid_alive

pytestmark = pytest.mark.lab


def _leftovers(lab_names: list[str], lab_dir: str) -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    with open("/proc/self/mounts") as fh:
        mounts = fh.read()
    found = [name for name in lab_names if f"{name} " in netns + "\n" or f" {name}:" in links or f" {name}@" in links]
    found += [line for line in mounts.splitlines() if lab_dir in line]
    if os.path.exists(lab_dir):
        found.append(lab_dir)
    return found


def _names(lab: Lab) -> list[str]:
    return [lab.bridge] + [h.netns for h in lab.hosts] + [h.veth for h in lab.hosts]


def test_three_ssh_hosts_with_pinned_keys_and_private_filesystems(make_lab):
    lab = make_lab(3)
    assert len({h.ip for h in lab.hosts}) == 3
    names = []
    for host in lab.hosts:
        client = lab.ssh_client(host)  # RejectPolicy: only the pinned host key is accepted
        try:
            _stdin, stdout, _stderr = client.exec_command("hostname && id -u", timeout=10)
            out = stdout.read().decode().split()
            assert stdout.channel.recv_exit_status() == 0
        finally:
            client.close()
        names.append(out[0])
        assert out[1] == "0"
    assert names == [h.name for h in lab.hosts] == ["node1", "node2", "node3"]

    marker = f"/opt/foundation-lab-test-{os.getpid()}"
    lab.hosts[0].exec(f"echo written-on-node1 > {marker}")
    assert lab.hosts[0].path(marker).read_text() == "written-on-node1\n"
    assert not os.path.exists(marker), "a host's /opt write leaked to the machine"
    assert lab.hosts[1].exec(f"test -e {marker}", check=False).returncode == 1
    # /tmp and /run are private too; the machine's programs are shared.
    lab.hosts[1].exec("echo x > /tmp/only-here")
    assert lab.hosts[2].exec("test -e /tmp/only-here", check=False).returncode == 1
    assert lab.hosts[2].exec("python3 -m foundation_cli --version").stdout.startswith("foundation ")
    # Hosts reach each other by name, and the openssh client agrees with the pinned keys too.
    assert lab.hosts[0].exec("getent hosts node3").stdout.split()[0] == lab.hosts[2].ip
    ssh = subprocess.run(lab.ssh_argv(lab.hosts[1], "hostname"), capture_output=True, text=True, timeout=20)
    assert ssh.returncode == 0 and ssh.stdout.strip() == "node2", ssh.stderr


def test_same_hostname_variant(make_lab):
    lab = make_lab(2, same_hostname=True)
    assert [h.exec("hostname").stdout.strip() for h in lab.hosts] == ["node", "node"]
    assert lab.hosts[0].ip != lab.hosts[1].ip


def test_crash_partition_heal(make_lab):
    lab = make_lab(2)
    a, b = lab.hosts
    sleeper = a.popen(["sleep", "300"])
    assert sleeper.pid in a.pids()
    killed = a.crash()
    assert sleeper.pid in killed and sleeper.wait(timeout=5) == -signal.SIGKILL
    assert a.sshd_pid in a.pids(), "crash must leave sshd running"

    ping = f"python3 -c \"import socket; socket.create_connection(('{a.ip}', 22), 1).close()\""
    assert b.exec(ping, check=False).returncode == 0
    a.partition()
    assert b.exec(ping, check=False).returncode != 0
    a.heal()
    deadline = time.monotonic() + 10
    while b.exec(ping, check=False).returncode != 0:
        assert time.monotonic() < deadline, "host unreachable after heal"


def test_teardown_leaves_nothing(make_lab):
    lab = make_lab(2)
    lab.hosts[0].exec("nohup sleep 300 >/dev/null 2>&1 &")  # a process nobody tracks
    names, lab_dir = _names(lab), str(lab.dir)
    pids = [p for h in lab.hosts for p in h.pids()]
    lab.close()
    assert _leftovers(names, lab_dir) == []
    assert not [p for p in pids if pid_alive(p)]


def test_stale_lab_from_killed_run_is_cleaned():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    # A run that builds a lab, starts an untracked process in it, then dies by SIGKILL.
    code = textwrap.dedent(
        """
        import os, signal, sys
        from tests.lab.netns import Lab
        lab = Lab(2)
        lab.hosts[1].exec("nohup sleep 300 >/dev/null 2>&1 &")
        print(lab.slot.index, lab.dir, *(h.netns for h in lab.hosts), *(h.veth for h in lab.hosts), lab.bridge, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    index, lab_dir, *names = proc.stdout.split()
    assert os.path.exists(lab_dir)
    stale_pids = [
        int(p) for p in subprocess.run(["ip", "netns", "pids", names[1]], capture_output=True, text=True).stdout.split()
    ]
    assert stale_pids, "the untracked process should still run in the dead run's lab"

    removed = slots.cleanup_stale()
    assert any(names[1] in r for r in removed), removed
    assert _leftovers(names, lab_dir) == []
    assert not [p for p in stale_pids if pid_alive(p)]


def test_consul_cluster_elects_a_leader_and_a_fourth_node_joins(consul_cluster):
    leader = consul_cluster.wait_leader()
    assert leader.split(":")[0] in [h.ip for h in consul_cluster.hosts]
    assert consul_cluster.member_status() == {"node1": 1, "node2": 1, "node3": 1}
    consul_cluster.start_client()
    assert consul_cluster.member_status()["node4"] == 1
    # A Foundation process inside a host talks to its local agent.
    host = consul_cluster.hosts[1]
    out = host.exec(
        "python3 -m foundation_cli kv put lab/probe from-node2 && python3 -m foundation_cli kv get lab/probe"
    )
    assert out.stdout == "from-node2"
