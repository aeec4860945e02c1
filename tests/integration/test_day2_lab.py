"""Day-2 operations on a 3-host lab (3 Consul servers on network-namespace hosts, a node agent in each).

One lab for the whole module (CI time): drain hands a singleton over to
another node (the old copy stops before the new one starts, no lock-delay),
stops a replicated instance, puts the node in Consul maintenance, and undrain
brings it back; exec runs a command over SSH on every node in parallel (with a
host's own SSH settings from the state file). Scheduled snapshots fetched over
SSH and `upgrade` are tested on a cluster made by `up` (ACLs, TLS, a client):
test_day2_up_lab.py.
"""

from __future__ import annotations

import json
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
from tests.lab.consul import ConsulCluster
from tests.lab.netns import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab3(consul_bin, tmp_path_factory):
    """3 Consul servers with a node agent each, both run by the supervised loop `foundation up` uses
    (so `upgrade` restarts them the product's way); the state file points at them with the lab's SSH key."""
    import os

    if os.geteuid() != 0:
        pytest.skip("the test lab needs root (network namespaces)")
    from foundation_cli import cluster_state
    from foundation_cli.core.bootstrap import _supervised_start

    lab = Lab(3)
    cluster = ConsulCluster(lab)
    try:
        for host in cluster.hosts:
            host.write(cluster.CONFIG_PATH, json.dumps(cluster.agent_config(host, server=True), indent=2))
            host.exec(_supervised_start("consul", [consul_bin, "agent", f"-config-file={cluster.CONFIG_PATH}"], {}))
        cluster.wait_leader(timeout=60)
        for host in cluster.hosts:
            env = {"CONSUL_HTTP_ADDR": f"http://{host.ip}:8500", "FOUNDATION_NODE": host.name}
            env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
            host.exec(_supervised_start("agent", ["python3", "-m", "foundation_cli", "agent", "run"], env))
        wait_for(lambda: len(agent_passing(cluster.http_addr)) == 3, 40, "3 agents")
        cluster_state.save(
            {
                "mode": "ssh",
                "hosts": [h.ip for h in cluster.hosts],
                "nodes": {h.ip: h.name for h in cluster.hosts},
                "consul_http_addrs": cluster.http_addrs,
                "ssh": {"user": "root", "identity_file": lab.ssh_key, "known_hosts": lab.known_hosts},
            }
        )
        yield cluster
    finally:
        cluster_state.clear()
        lab.close()  # kills every process in the hosts (the loops, consul, the agents)


@pytest.fixture
def witness_dir():
    d = shared_dir("foundation-day2-lab-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _env(addr: str) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["CONSUL_HTTP_ADDR"] = addr
    return env


def _maintenance(addr: str, node: str) -> bool:
    return any(c["CheckID"] == "_node_maintenance" for c in http_json(f"{addr}/v1/health/node/{node}") or [])


@pytest.mark.timeout(240)
def test_drain_hands_over_and_undrain_brings_back(lab3, witness_dir):
    env = _env(lab3.http_addr)
    script, log = write_witness(witness_dir)
    rep_log = witness_dir / "rep.log"
    rep_log.touch()
    rep_log.chmod(0o666)
    cli(["start-singleton", "wit", "--", "python3", str(script), str(log)], env)
    cli(["start-replicated", "rep", "--", "python3", str(script), str(rep_log)], env)
    holder = wait_for(
        lambda: [r["node"] for r in ps(env, "wit") if r["state"] == "running" and r["session"]], 20, "holder"
    )[0]
    wait_for(lambda: witness_runs(log), 10, "the witness to start")
    token_before = next(r["fencing"] for r in ps(env, "wit") if r["node"] == holder)

    out = cli(["drain", holder, "--reason", "disk swap", "--explain"], env)
    assert f"{holder} drained" in out.stdout and "moved: wit →" in out.stdout and "rep" in out.stdout
    assert "in maintenance" in out.stdout
    assert f"PUT {lab3.http_addr}/v1/kv/foundation/drain/{holder}" in out.stderr or "foundation/drain/" in out.stderr
    new = [r for r in ps(env, "wit") if r["state"] == "running"]
    assert len(new) == 1 and new[0]["node"] != holder and new[0]["fencing"] > token_before
    runs = wait_for(lambda: (rs := witness_runs(log)) and rs[-1].node == new[0]["node"] and rs, 10, "new witness")
    old = [r for r in runs if r.node == holder]
    assert old and all(r.stopped for r in old), "the drained node's copy stops (SIGTERM) itself"
    assert overlaps(runs) == []
    gap = runs[-1].first - old[-1].last
    print(f"drain handover: old copy's last line → new copy's first line {gap:.2f}s")
    assert [r for r in witness_runs(rep_log) if r.node == holder and not r.stopped] == []
    assert _maintenance(lab3.http_addr, holder)
    passing = [e["Node"]["Node"] for e in http_json(f"{lab3.http_addr}/v1/health/service/rep?passing=1")]
    assert holder not in passing
    assert f"drained (runs nothing until `foundation undrain`): {holder} (disk swap)" in cli(["ps"], env).stderr
    st = cli(["status", "--window", "0"], env).stdout
    assert f"drained {holder} (disk swap)" in st

    again = cli(["drain", holder], env)
    assert f"{holder} already drained" in again.stdout

    out = cli(["undrain", holder], env)
    assert f"{holder} undrained" in out.stdout and not _maintenance(lab3.http_addr, holder)
    wait_for(
        lambda: holder in [r["node"] for r in ps(env, "rep") if r["state"] == "running"], 20, "rep back on the node"
    )
    assert [r["node"] for r in ps(env, "wit") if r["state"] == "running"] == [new[0]["node"]]  # no move back
    cli(["stop", "wit"], env)
    cli(["stop", "rep"], env)


@pytest.mark.timeout(120)
def test_exec_on_every_node_over_ssh(lab3):
    from foundation_cli import cluster_state

    env = _env(lab3.http_addr)
    names = sorted(h.name for h in lab3.hosts)
    out = cli(["exec", "--all", "--", "hostname"], env)
    for name in names:
        assert name in out.stdout
    data = json.loads(cli(["exec", "--all", "--json", "--", "echo", "one;", "echo", "two"], env).stdout)
    assert sorted(d["node"] for d in data) == names and all(d["stdout"] == "one\ntwo\n" for d in data)
    one = cli(["exec", "--node", names[1], "--explain", "--", "true"], env)
    assert "ssh" in one.stderr and names[1] in one.stdout
    dry = cli(["exec", "--all", "--dry-run", "--", "touch", "/tmp/x"], env)
    assert dry.stdout.count(" 'touch /tmp/x'") == 3

    # Failing somewhere is exit 7, with each node's exit code in the table.
    first = lab3.hosts[0]
    out = cli(["exec", "--all", "--", f'test "$(hostname)" != {first.name}'], env, check=False)
    assert out.returncode == 7 and f"failed on 1 of 3 nodes: {first.name}" in out.stderr
    # A host's own SSH settings from the state win over the global ones (here: a user that cannot log in).
    state = cluster_state.load()
    state["host_ssh"] = {first.ip: {"user": "nosuchuser"}}
    cluster_state.save(state)
    try:
        out = cli(["exec", "--all", "--json", "--", "true"], env, check=False)
        res = {d["node"]: d for d in json.loads(out.stdout)}
        assert out.returncode == 7 and res[first.name]["error"] and all(res[h.name]["ok"] for h in lab3.hosts[1:])
    finally:
        state.pop("host_ssh")
        cluster_state.save(state)
    bad = cli(["exec", "--node", "nope", "--", "true"], env, check=False)
    assert bad.returncode == 5
    assert cli(["exec", "--", "true"], env, check=False).returncode == 2
