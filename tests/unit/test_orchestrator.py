"""Cluster-wide decisions of `up`: node names, server choice, the per-host Consul config."""

from __future__ import annotations

import json

from foundation_cli.core import cluster_config as cc
from foundation_cli.core.bootstrap import Probe
from foundation_cli.core.orchestrator import _choose_servers, _unique_names, consul_config_for
from tests.unit.up_runs import planned_run, up_run


def probe(hostname: str, addr: str, config: dict | None = None) -> Probe:
    return Probe(hostname=hostname, addr=addr, config=json.dumps(config) if config else None)


def test_shared_hostnames_get_unique_node_names():
    cfg = cc.parse("hosts: [10.0.0.1, 10.0.0.2, 10.0.0.3]")
    probes = {
        "10.0.0.1": probe("raspberrypi", "10.0.0.1"),
        "10.0.0.2": probe("raspberrypi", "10.0.0.2"),
        "10.0.0.3": probe("db.example.org", "10.0.0.3"),
    }
    names = _unique_names(cfg.hosts, probes)
    assert names == {"10.0.0.1": "raspberrypi-10-0-0-1", "10.0.0.2": "raspberrypi-10-0-0-2", "10.0.0.3": "db"}


def test_existing_and_explicit_node_names_win():
    cfg = cc.parse("hosts: [{address: a, node_name: edge}, b]")
    probes = {"a": probe("x", "10.0.0.1"), "b": probe("edge", "10.0.0.2", {"node_name": "kept"})}
    assert _unique_names(cfg.hosts, probes) == {"a": "edge", "b": "kept"}


def test_servers_pinned_then_existing_then_first():
    cfg = cc.parse("hosts: [a, b, c, {address: d, role: server}, e]\nservers: 3\n")
    probes = {h.address: probe(h.address, h.address) for h in cfg.hosts}
    probes["e"] = probe("e", "e", {"server": True})
    assert _choose_servers(cfg, cfg.hosts, probes) == {"d", "e", "a"}
    assert _choose_servers(cc.parse("hosts: [a, b]"), cc.parse("hosts: [a, b]").hosts, probes) == {"a"}


def test_consul_config_has_our_defaults_and_raw_wizard_overrides():
    cfg = cc.parse("hosts: [a]\nconsul: {log_level: DEBUG, performance: {leave_drain_time: 5s}}\n")
    conf = consul_config_for(
        cfg,
        node_name="n1",
        address="10.0.0.1",
        server=True,
        server_addrs=["10.0.0.1"],
        gossip_key="k" * 44,
        cluster_id="cid",
        bootstrap_expect=1,
    )
    assert conf["disable_update_check"] is True and conf["bootstrap_expect"] == 1
    assert conf["bind_addr"] == conf["advertise_addr"] == "10.0.0.1"
    assert conf["retry_join"] == ["10.0.0.1"] and conf["encrypt"] == "k" * 44
    assert conf["retry_interval"] == "1s"  # not Consul's 30 s: a fresh cluster forms as soon as its peers listen
    assert conf["log_level"] == "DEBUG"
    assert conf["performance"] == {"raft_multiplier": 1, "leave_drain_time": "5s"}


def test_acl_token_goes_to_servers_as_master_and_to_every_agent(tmp_path):
    token_file = tmp_path / "op.token"
    token_file.write_text("3f1c0b5e-0000-4000-8000-000000000001\n")
    cfg = cc.parse(f"hosts: [a, b]\nacl: {{enabled: true, token_file: {token_file}}}\n")
    from foundation_cli.core.orchestrator import operator_token

    token = operator_token(cfg, {})
    assert token == "3f1c0b5e-0000-4000-8000-000000000001"
    common = dict(server_addrs=["10.0.0.1"], gossip_key="k" * 44, cluster_id="c", bootstrap_expect=1, token=token)
    server = consul_config_for(cfg, node_name="a", address="10.0.0.1", server=True, **common)
    client = consul_config_for(cfg, node_name="b", address="10.0.0.2", server=False, **common)
    assert server["acl"]["tokens"] == {"master": token, "agent": token}
    assert client["acl"]["tokens"] == {"agent": token} and client["acl"]["default_policy"] == "deny"
    from foundation_cli.raw.secrets import mask

    assert token not in mask(json.dumps(server))


def test_joining_an_existing_cluster_never_bootstraps():
    cfg = cc.parse("hosts: [a]")
    conf = consul_config_for(
        cfg,
        node_name="a",
        address="10.0.0.9",
        server=False,
        server_addrs=["10.0.0.1", "10.0.0.2"],
        gossip_key="k" * 44,
        cluster_id="c",
        bootstrap_expect=0,
    )
    assert "bootstrap_expect" not in conf and conf["retry_join"] == ["10.0.0.1", "10.0.0.2"]


def test_for_each_never_runs_more_than_parallel_at_once():
    import threading
    import time

    from foundation_cli.core.fanout import for_each

    lock = threading.Lock()
    running, peak, seen = [0], [0], []

    def work(item):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
            seen.append(item)

    for_each(list(range(40)), work, parallel=4)
    assert sorted(seen) == list(range(40)) and 1 < peak[0] <= 4


def test_plan_step_decides_roles_names_and_one_plan_per_probed_host(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    probes = {a: probe("pi", f"10.0.0.{i}") for i, a in enumerate("abcd", 1)}  # e unreachable
    run = planned_run("hosts: [a, b, c, d, e]\nservers: 3\n", probes=probes)
    assert set(run.plans) == {"a", "b", "c", "d"}
    assert run.servers == {"a", "b", "c"} and run.server_addrs == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert [run.plans[a].node_name for a in "abcd"] == [f"pi-10-0-0-{i}" for i in range(1, 5)]
    assert all(p.consul_config["encrypt"] == run.gossip for p in run.plans.values())
    assert run.results["d"].role == "client" and run.results["e"].role == ""


def test_node_tokens_are_kept_in_the_state_file_before_any_host_gets_them(tmp_path, monkeypatch):
    """An `up` killed half-way must not make the next one mint new tokens (every host would restart)."""
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    from foundation_cli.core import cluster_state
    from foundation_cli.core.acl import NodeTokens
    from foundation_cli.core.orchestrator import UpRun, _keep_node_tokens, ssh_options

    cfg = cc.parse("hosts: [a, b]\n")
    run = UpRun(cfg=cfg, hosts=cfg.hosts, opts=ssh_options(cfg), say=lambda _h, _m: None, cluster_id="c1")
    run.node_tokens = {"a": NodeTokens(consul="ca", agent="aa")}
    _keep_node_tokens(run)  # no state yet
    assert cluster_state.load() == {
        "mode": "ssh",
        "cluster_id": "c1",
        "node_tokens": {"a": {"consul": "ca", "agent": "aa"}},
    }

    cluster_state.save(
        {"mode": "ssh", "cluster_id": "c1", "token": "t", "node_tokens": {"b": {"consul": "cb", "agent": "ab"}}}
    )
    _keep_node_tokens(run)  # an SSH cluster's state: merged, nothing else lost
    assert cluster_state.load() == {
        "mode": "ssh",
        "cluster_id": "c1",
        "token": "t",
        "node_tokens": {"a": {"consul": "ca", "agent": "aa"}, "b": {"consul": "cb", "agent": "ab"}},
    }

    run.snapshot_token = "s1"  # the servers' snapshot token is kept as early as the nodes' tokens
    _keep_node_tokens(run)
    assert cluster_state.load()["snapshot_token"] == "s1" and cluster_state.load()["token"] == "t"

    local = {"mode": "local", "consul_http_addr": "http://127.0.0.1:8500"}
    cluster_state.save(local)
    _keep_node_tokens(run)  # a local cluster's state is not this run's to change
    assert cluster_state.load() == local


def test_a_new_cluster_missing_a_server_is_refused_at_once_not_after_a_90_s_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    from foundation_cli.core.bootstrap import StepResult
    from foundation_cli.core.orchestrator import UpRun, cannot_form
    from foundation_cli.errors import UnreachableError

    def run_with(*, running: bool = False, state: dict | None = None) -> UpRun:
        run = up_run("hosts: [a, b, c, d]\nservers: 3\n", state=state or {})
        run.servers = {"a", "b", "c"}
        run.probes = {x: Probe(hostname=x, addr=x, consul_running=running) for x in "abcd"}
        for x in "abd":
            run.results[x].steps = [StepResult("consul", "started")]
        return run

    run = run_with()
    assert cannot_form(run) is None  # c has not failed (yet)
    run.results["c"].steps = [StepResult("secrets", "written")]
    run.results["c"].fail(UnreachableError("c: SSH connection lost: SSH session not active"))
    why = cannot_form(run)
    assert why and "c failed before its Consul started (c: SSH connection lost" in why and "3 servers" in why
    run.results["c"].steps.append(StepResult("consul", "started"))
    assert cannot_form(run) is None  # its Consul runs: the other two can elect with it
    assert cannot_form(run_with(running=True)) is None  # an existing cluster has its leader
    existing = run_with(state={"consul_http_addr": "https://a:8501"})
    existing.results["c"].fail(UnreachableError("lost"))
    assert cannot_form(existing) is None
    alone = run_with()  # every server failed: no one is left waiting, the hosts' own errors say it all
    for x in "abc":
        alone.results[x].steps = []
        alone.results[x].fail(UnreachableError("unreachable"))
    assert cannot_form(alone) is None
    client = run_with()
    client.results["d"].steps = []
    client.results["d"].fail(UnreachableError("lost"))
    assert cannot_form(client) is None  # a client is not waited for


def test_clients_wait_for_the_servers_consul_and_hold_no_slot_while_waiting_for_their_token(tmp_path, monkeypatch):
    """The servers' Consul starts first (the election waits for it); a client waiting for the ACL step
    leaves its slot of --parallel to the clients behind it, so all of them are ready when the tokens are."""
    import threading
    import time
    from types import SimpleNamespace

    from foundation_cli.core import orchestrator
    from tests.unit.up_runs import up_run

    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    run = up_run("hosts: [s1, s2, c1, c2, c3, c4]\n", parallel=2)
    servers, clients = run.hosts[:2], run.hosts[2:]
    run.plans = {h.address: SimpleNamespace(server=h in servers) for h in run.hosts}
    lock = threading.Lock()
    events: list[tuple[str, str]] = []
    working, peak, waiting = [0], [0], [0]
    all_waiting = threading.Event()

    def busy(kind: str, h) -> None:
        with lock:
            events.append((kind, h.address))
            working[0] += 1
            peak[0] = max(peak[0], working[0])
        time.sleep(0.02)
        with lock:
            working[0] -= 1

    def fake_apply_host(run, h, around_consul=None, *, agent_first=False):
        before, after = around_consul
        busy("upload", h)
        if h in clients:
            with lock:
                waiting[0] += 1
                if waiting[0] == len(clients):
                    all_waiting.set()
        before()
        busy("consul", h)
        after()

    made = []

    def fake_acl_bootstrap(run):
        made.append(all_waiting.wait(5))  # every client uploaded before the tokens, whatever --parallel

    monkeypatch.setattr(orchestrator, "_apply_host", fake_apply_host)
    monkeypatch.setattr(orchestrator, "_refuse_a_cluster_that_cannot_form", lambda run: None)
    monkeypatch.setattr(orchestrator, "_set_http_addrs", lambda run: None)
    monkeypatch.setattr(orchestrator.secure_up, "acl_bootstrap", fake_acl_bootstrap)
    orchestrator._apply_tokens_first(run, servers, clients)

    assert {a: r.error for a, r in run.results.items() if r.error} == {}
    assert made == [True]
    assert peak[0] <= 2  # never more than --parallel hosts worked on
    last_server_consul = max(i for i, (kind, a) in enumerate(events) if kind == "consul" and a in ("s1", "s2"))
    first_client = min(i for i, (_kind, a) in enumerate(events) if a.startswith("c"))
    assert first_client > last_server_consul
    assert sorted(a for kind, a in events if kind == "consul") == ["c1", "c2", "c3", "c4", "s1", "s2"]


def test_raft_host_is_the_address_a_server_advertises():
    from foundation_cli.core.secure_up import raft_host

    assert raft_host("198.18.0.2:8300") == "198.18.0.2"
    assert raft_host("[fd00::1]:8300") == "fd00::1"


def test_new_servers_gossip_every_100_ms_and_a_running_server_is_not_restarted_for_it(tmp_path, monkeypatch):
    """A new leader with ACLs sets up the Connect CA (clients' certificates) only once its gossip told
    the others its ACL mode: faster server gossip forms a new cluster ~0.5-1 s sooner."""
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    from foundation_cli.core.bootstrap import Probe
    from tests.unit.up_runs import planned_run

    text = "hosts: [a, b, c, d]\nservers: 3\n"
    fresh = planned_run(text)
    servers = [a for a, p in fresh.plans.items() if p.server]
    assert len(servers) == 3
    for plan_ in fresh.plans.values():
        conf = plan_.consul_config
        if plan_.server:
            assert conf["gossip_lan"] == conf["gossip_wan"] == {"gossip_interval": "100ms"}
        else:
            assert "gossip_lan" not in conf and "gossip_wan" not in conf

    old = {"server": True, "node_name": "a"}  # a server made before: running, no gossip block
    probes = {
        h: Probe(hostname=h, addr=f"10.0.0.{i}", consul_running=h == "a", config=json.dumps(old) if h == "a" else None)
        for i, h in enumerate("abcd", 1)
    }
    kept = planned_run(text, probes=probes)
    assert "gossip_wan" not in kept.plans["a"].consul_config
    assert all("gossip_wan" in kept.plans[s].consul_config for s in ("b", "c"))


def test_for_each_raises_a_failure_only_once_every_item_was_worked_on():
    import threading

    import pytest

    from foundation_cli.core.fanout import for_each

    done: list[int] = []
    lock = threading.Lock()

    def work(item: int) -> None:
        if item == 0:
            raise ValueError("first")
        threading.Event().wait(0.01)
        with lock:
            done.append(item)

    with pytest.raises(ValueError, match="first"):
        for_each(list(range(12)), work, parallel=3)
    assert sorted(done) == list(range(1, 12))  # nobody still running behind the caller's back


def test_the_cluster_is_formed_only_once_no_server_is_in_legacy_acl_mode(monkeypatch):
    """A new cluster's follower answers ACL calls with 500 "legacy mode" until its own check sees the
    leader (up to ~1.6 s after the election): `up` must not say done before (its gossip tag acls=2)."""
    from types import SimpleNamespace

    import pytest

    from foundation_cli.core import orchestrator
    from foundation_cli.core.bootstrap import HostResult
    from foundation_cli.errors import UnreachableError
    from foundation_cli.raw.recorder import Recorder

    polls: list[int] = []

    class Client:
        def __init__(self, legacy_polls: int) -> None:
            self.legacy_polls = legacy_polls
            self.status = SimpleNamespace(leader=lambda: "10.0.0.1:8300")
            self.agent = SimpleNamespace(members=self.members)
            self.catalog = SimpleNamespace(service=lambda *_a, **_k: (1, [{"Node": "a"}, {"Node": "b"}]))

        def members(self):
            polls.append(1)
            mode = "2" if len(polls) <= self.legacy_polls else "1"
            return [
                {"Name": "a", "Status": 1, "Tags": {"role": "consul", "acls": "1"}},
                {"Name": "b", "Status": 1, "Tags": {"role": "consul", "acls": mode}},
            ]

    plans = {"a": SimpleNamespace(node_name="a"), "b": SimpleNamespace(node_name="b")}
    results = {x: HostResult(alias=x) for x in "ab"}
    result = orchestrator.UpResult(http_addr="http://10.0.0.1:8500")
    monkeypatch.setattr(orchestrator, "_client", lambda *_a: (Client(3), Recorder()))
    orchestrator._wait_cluster(result, plans, results, None, timeout=10, say=lambda *_a: None)
    assert len(polls) == 4  # three answers with b in legacy mode, then done

    polls.clear()
    monkeypatch.setattr(orchestrator, "_client", lambda *_a: (Client(10**6), Recorder()))
    with pytest.raises(UnreachableError, match="still in legacy ACL mode: b"):
        orchestrator._wait_cluster(result, plans, results, None, timeout=0.3, say=lambda *_a: None)
