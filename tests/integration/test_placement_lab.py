"""Placement in the lab: 3 Consul servers on network-namespace hosts, one node agent in each.

The expensive ones, one of each: the holder is partitioned and fences itself
before the new holder starts, and after the heal there is still one; the
holder's node crashes (SIGKILL of its consul and agent) and it moves; replicated follows membership (a 4th node
joining gets one) and stop removes all. The witness file under /dev/shm
(shared by every host) shows that no two singleton instances overlap.
"""

from __future__ import annotations

import shutil

import pytest

from tests.integration.test_placement_support import (
    agent_passing,
    cli,
    http_json,
    overlaps,
    ps,
    shared_dir,
    wait_for,
    witness_runs,
    write_witness,
)

pytestmark = pytest.mark.lab


def start_agent_on(host, log_dir):
    """The agent as `foundation up` starts it: python3 -m foundation_cli agent run, inside the host."""
    log = open(log_dir / f"agent-{host.name}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return host.popen(
            ["python3", "-m", "foundation_cli", "agent", "run"],
            env={"CONSUL_HTTP_ADDR": f"http://{host.ip}:8500", "FOUNDATION_NODE": host.name},
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


@pytest.fixture
def witness_dir():
    d = shared_dir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _env(addr: str) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["CONSUL_HTTP_ADDR"] = addr
    return env


def _voters(addr: str) -> int:
    conf = http_json(f"{addr}/v1/operator/raft/configuration") or {}
    return len([s for s in conf.get("Servers") or [] if s.get("Voter")])


def _holder(env, name):
    rows = [r for r in ps(env, name) if r["state"] == "running" and r["session"]]
    return rows[0]["node"] if len(rows) == 1 else None


@pytest.mark.timeout(200)
def test_singleton_fences_on_partition_and_moves_on_crash(consul_cluster, tmp_path, witness_dir):
    hosts = {h.name: h for h in consul_cluster.hosts}
    addr = {h.name: f"http://{h.ip}:8500" for h in consul_cluster.hosts}
    for host in hosts.values():
        start_agent_on(host, tmp_path)
    wait_for(lambda: len(agent_passing(consul_cluster.http_addr)) == 3, 30, "3 agents")
    script, log = write_witness(witness_dir)

    out = cli(["start-singleton", "wit", "--", "python3", str(script), str(log)], _env(consul_cluster.http_addr))
    assert "wit running on" in out.stdout
    first = wait_for(lambda: _holder(_env(consul_cluster.http_addr), "wit"), 10, "a holder")

    # 1. Partition the holder: it fences itself (stops its process) before another node starts it.
    other = next(n for n in hosts if n != first)
    env = _env(addr[other])
    hosts[first].partition()
    try:
        second = wait_for(
            lambda: (h := _holder(env, "wit")) and h != first and h, 45, "the singleton to move after the partition"
        )
        # ps reports the instance when it is spawned; the witness writes its first line a moment later.
        runs = wait_for(lambda: (rs := witness_runs(log)) and rs[-1].node == second and rs, 10, "the new witness")
        fenced = [r for r in runs if r.node == first]
        assert fenced and all(r.stopped for r in fenced), "the partitioned holder must stop its process itself"
        assert overlaps(runs) == [], overlaps(runs)
    finally:
        hosts[first].heal()

    # On heal: still exactly one instance. (A Raft election after the heal may make the holder fence
    # and restart in place for a moment: never two.)
    wait_for(lambda: len(agent_passing(addr[other])) == 3, 30, "the healed agent passing again")
    # Autopilot may have dropped the partitioned server from Raft; it is a voter again after stabilising.
    wait_for(lambda: _voters(addr[other]) == 3, 60, "3 Raft voters again", interval=0.5)
    holder = wait_for(lambda: _holder(env, "wit"), 15, "one holder after the heal")
    wait_for(lambda: [r.node for r in witness_runs(log) if not r.stopped] == [holder], 10, "one live witness")
    assert overlaps(witness_runs(log)) == []

    # 2. Crash the holder's node (SIGKILL of its consul, agent and the singleton): it moves.
    survivor = next(n for n in hosts if n != holder)
    env = _env(addr[survivor])
    hosts[holder].crash()
    third = wait_for(
        lambda: (h := _holder(env, "wit")) and h != holder and h, 45, "the singleton to move after the crash"
    )
    runs = wait_for(lambda: (rs := witness_runs(log)) and rs[-1].node == third and rs, 10, "the new witness")
    assert overlaps(runs) == [], overlaps(runs)

    cli(["stop", "wit"], env)
    runs = witness_runs(log)
    assert [r for r in runs if not r.stopped and r.node != holder] == []


@pytest.mark.timeout(150)
def test_replicated_follows_membership_and_stop_removes_all(consul_cluster, tmp_path, witness_dir):
    env = _env(consul_cluster.http_addr)
    for host in consul_cluster.hosts:
        start_agent_on(host, tmp_path)
    wait_for(lambda: len(agent_passing(consul_cluster.http_addr)) == 3, 30, "3 agents")
    script, log = write_witness(witness_dir)

    out = cli(["start-replicated", "rep", "--", "python3", str(script), str(log)], env)
    assert out.stdout.count("(pid") == 3
    assert sorted(r["node"] for r in ps(env, "rep") if r["state"] == "running") == sorted(
        h.name for h in consul_cluster.hosts
    )

    spare = consul_cluster.start_client()
    start_agent_on(spare, tmp_path)
    wait_for(lambda: len([r for r in ps(env, "rep") if r["state"] == "running"]) == 4, 40, "the 4th node to get one")
    everywhere = sorted([h.name for h in consul_cluster.hosts] + [spare.name])
    # ps reports an instance when it is spawned; the witness writes its first line a moment later.
    wait_for(lambda: sorted({r.node for r in witness_runs(log)}) == everywhere, 10, "the 4th node's witness")

    # `logs` of an instance on another node goes over SSH with the settings `up` saved.
    from foundation_cli.core import cluster_state

    cluster_state.save(
        {
            "ssh": {
                "user": "root",
                "identity_file": consul_cluster.lab.ssh_key,
                "known_hosts": consul_cluster.lab.known_hosts,
            }
        }
    )
    try:
        node = consul_cluster.hosts[1].name
        logs = cli(["logs", "rep", "--node", node, "-n", "5"], env)
        assert f"witness started {node}" in logs.stdout
        assert "(ssh)" in logs.stderr
        many = cli(["logs", "rep"], env, check=False)
        assert many.returncode == 2 and "--node" in many.stderr
    finally:
        cluster_state.state_path().unlink(missing_ok=True)

    out = cli(["stop", "rep"], env)
    assert "rep stopped" in out.stdout
    assert ps(env) == []
    runs = witness_runs(log)
    assert len(runs) == 4 and all(r.stopped for r in runs)
