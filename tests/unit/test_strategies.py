"""Strategy selection, the claimable filter, the found-hosts table, interface binding and DNS wire format."""

from __future__ import annotations

import struct

import pytest
from dns import name as dnsname
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_cli.core import cluster_config, mdns_records, strategies
from foundation_cli.core.hosts import HostRecord
from foundation_cli.errors import ConfigError, UsageError
from foundation_cli.tools import dns
from foundation_cli.tools import mdns as mdns_tool


def test_default_strategy_mortal_is_mdns_and_hosts_make_it_static():
    assert strategies.strategy_of(None) == "mdns"
    assert strategies.strategy_of(cluster_config.ClusterConfig()) == "mdns"
    cfg = cluster_config.parse("hosts: [10.0.0.1, {address: 10.0.0.2, user: pi, port: 2222}]\n")
    assert strategies.strategy_of(cfg) == "static"
    hosts = strategies.find_hosts(cfg, None)
    assert [(h.address, h.user, h.port, h.source) for h in hosts] == [
        ("10.0.0.1", None, 22, "static"),
        ("10.0.0.2", "pi", 2222, "static"),
    ]


def test_mdns_without_interface_is_skipped_with_a_note(monkeypatch):
    monkeypatch.delenv(mdns_tool.ENV_INTERFACE, raising=False)
    notes: list[str] = []
    assert strategies.find_hosts(cluster_config.ClusterConfig(), None, notes=notes) == []
    assert "mDNS discovery skipped" in notes[0] and mdns_tool.ENV_INTERFACE in notes[0]


def test_dns_and_consul_strategies_need_their_options():
    cfg = cluster_config.parse("mode: wizard\ncluster: {strategy: dns}\n")
    with pytest.raises(ConfigError, match="options.name"):
        strategies.find_hosts(cfg, None)
    cfg = cluster_config.parse("mode: wizard\ncluster: {strategy: consul}\n")
    with pytest.raises(ConfigError, match="options.consul"):
        strategies.find_hosts(cfg, None)


def _rec(status: str | None, **kw) -> HostRecord:
    rec = HostRecord(address=kw.pop("address", "198.18.0.2"), **kw)
    if status:
        rec.extra["status"] = status
    return rec


def test_claimable_never_includes_other_clusters_invalid_or_candidates():
    hosts = [
        _rec(None, address="10.0.0.1"),  # static
        _rec(mdns_records.UNCLAIMED, address="10.0.0.2"),
        _rec(mdns_records.OTHER_CLUSTER, address="10.0.0.3"),
        _rec(mdns_records.INVALID, address="10.0.0.4"),
        _rec(mdns_records.CANDIDATE, address="10.0.0.5"),
        _rec(mdns_records.THIS_CLUSTER, address="10.0.0.6"),
        _rec("existing-server", address="10.0.0.7", extra={"join_only": "true"}),
    ]
    assert [h.address for h in strategies.claimable(hosts)] == ["10.0.0.1", "10.0.0.2"]


def test_hosts_table_is_display_safe():
    rec = _rec(mdns_records.INVALID, name="[red]x", cluster_id="0f1e2d3c-aaaa-bbbb-cccc-123456789012")
    rec.extra["problems"] = "node has invalid characters"
    cols, rows = strategies.hosts_table([rec])
    assert cols[0] == "ADDRESS" and cols[-1] == "STATUS"
    assert rows[0][1] == "?red?x" and rows[0][3] == "0f1e2d3c"
    assert rows[0][-1] == "invalid (node has invalid characters)"


def test_binding_requires_an_explicit_interface():
    with pytest.raises(UsageError, match="explicit interface"):
        mdns_tool.resolve_binding([])
    with pytest.raises(UsageError, match="no such network interface"):
        mdns_tool.resolve_binding(["nope0"])
    with pytest.raises(UsageError, match="no local interface has the address"):
        mdns_tool.resolve_binding(["203.0.113.77"])
    with pytest.raises(UsageError, match="IPv4 address but IPv6"):
        mdns_tool.resolve_binding(["127.0.0.1"], ipv6=True)
    assert mdns_tool.resolve_binding(["lo"]).addresses == ["127.0.0.1"]
    assert mdns_tool.resolve_binding(["all"]).all_interfaces


def test_recorded_commands_are_the_avahi_and_dns_sd_equivalents():
    assert mdns_tool.browse_command("_foundation._tcp.local.").startswith("avahi-browse -rpt _foundation._tcp")
    line = mdns_tool.publish_command("n@1.2.3.4", "_foundation._tcp.local.", 22, {"node": "n", "dc": ""})
    assert line.startswith("avahi-publish-service n@1.2.3.4 _foundation._tcp 22 node=n dc=")
    assert "dns-sd -R" in line


# -- DNS wire format -------------------------------------------------------------------------


def _answer_msg(qid: int) -> bytes:
    """A reply with an SRV answer (compressed names) and an A additional record."""
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 1)
    question = dnsname.from_text("_foundation._tcp.lab.").to_wire() + struct.pack("!HH", 33, 1)
    # SRV rdata: prio 10, weight 5, port 2222, target "n1" + pointer to "lab." (offset 12 + len("_foundation._tcp") + 2)
    lab_offset = 12 + 1 + len("_foundation") + 1 + len("_tcp")
    target = b"\x02n1" + struct.pack("!H", 0xC000 | lab_offset)
    srv = struct.pack("!HHH", 10, 5, 2222) + target
    answer = struct.pack("!H", 0xC00C) + struct.pack("!HHIH", 33, 1, 60, len(srv)) + srv
    a_name = b"\x02n1" + struct.pack("!H", 0xC000 | lab_offset)
    additional = a_name + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([198, 18, 0, 9])
    return header + question + answer + additional


def test_dns_parse_srv_with_compression():
    resp, truncated = dns.parse_response(_answer_msg(7), 7)
    assert not truncated and resp.rcode == 0
    (srv,) = resp.answers
    assert (srv.rtype, srv.value, srv.port, srv.priority, srv.weight) == ("SRV", "n1.lab.", 2222, 10, 5)
    (a,) = resp.additional
    assert (a.name, a.value) == ("n1.lab.", "198.18.0.9")


def test_dns_hostile_messages_raise_value_error_only():
    with pytest.raises(ValueError):
        dns.parse_response(b"\x00\x07", 7)
    with pytest.raises(ValueError, match="does not match"):
        dns.parse_response(_answer_msg(8), 7)
    loop = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + struct.pack("!H", 0xC00C)
    with pytest.raises(ValueError):
        dns.parse_response(loop, 1)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: _answer_msg(7)[:40] + b)))
def test_dns_any_reply_bytes_parse_or_raise_value_error(data: bytes):
    """Replies are untrusted input: whatever arrives, a Response or ValueError (never another exception)."""
    try:
        resp, _truncated = dns.parse_response(data, 7)
    except ValueError:
        return
    assert all(r.rtype in ("A", "AAAA", "SRV", "CNAME") for r in resp.answers + resp.additional)


def test_dns_query_wire_form_round_trips():
    resp, _ = dns.parse_response(dns.build_query("n1.lab.test", "SRV", 99), 99)
    assert resp.answers == [] and resp.rcode == 0
    with pytest.raises(UsageError):
        dns.build_query("a..b", "A", 1)


def test_nameserver_parsing():
    assert dns.parse_nameserver("127.0.0.1") == ("127.0.0.1", 53)
    assert dns.parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert dns.parse_nameserver("[::1]:53") == ("::1", 53)
    assert dns.parse_nameserver("::1") == ("::1", 53)
    with pytest.raises(UsageError):
        dns.parse_nameserver("ns.example")
    with pytest.raises(UsageError):
        dns.parse_nameserver("127.0.0.1:0")


def test_consul_strategy_address_follows_tls_like_every_lan_address():
    """``options.consul`` without a scheme: HTTPS on 8501 when TLS is on (the default), HTTP 8500 when off."""
    on = cluster_config.parse("mode: wizard\ncluster: {strategy: consul, options: {consul: 10.0.0.5}}\n")
    off = cluster_config.parse(
        "mode: wizard\ncluster: {strategy: consul, options: {consul: 10.0.0.5}}\ntls: {enabled: false}\n"
    )
    assert strategies.tls_on(on) and not strategies.tls_on(off)
    assert strategies.consul_address("10.0.0.5", tls=True).url == "https://10.0.0.5:8501"
    assert strategies.consul_address("10.0.0.5", tls=False).url == "http://10.0.0.5:8500"
    assert strategies.consul_address("http://10.0.0.5:8500", tls=True).url == "http://10.0.0.5:8500"  # said so
    assert strategies.consul_address("[fd00::5]", tls=True).url == "https://[fd00::5]:8501"
    with pytest.raises(UsageError):
        strategies.consul_address("unix:///run/consul.sock", tls=True)


def test_consul_strategy_asks_the_existing_cluster_over_https_when_tls_is_on(monkeypatch):
    asked: list[str] = []

    class Refused(Exception):
        pass

    def connect(settings, **_kw):
        asked.append(settings.consul_addr)
        raise Refused

    from foundation_cli.tools import consul as consul_tool

    monkeypatch.setattr(consul_tool, "connect", connect)
    cfg = cluster_config.parse("mode: wizard\ncluster: {strategy: consul, options: {consul: 10.0.0.5}}\n")
    with pytest.raises(Refused):
        strategies.discover(cfg, None)
    assert asked == ["https://10.0.0.5:8501"]


def test_join_targets_are_reached_like_the_servers_up_made(tmp_path, monkeypatch):
    """`up` joining an existing cluster's servers (the consul strategy) asks them over HTTPS when TLS is on."""
    from foundation_cli.core import orchestrator
    from foundation_cli.core.bootstrap import HostResult

    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    for text, want in (("", "https://10.0.0.5:8501"), ("tls: {enabled: false}\n", "http://10.0.0.5:8500")):
        cfg = cluster_config.parse("hosts: [10.0.0.9]\n" + text)
        run = orchestrator.UpRun(
            cfg=cfg,
            hosts=cfg.hosts,
            opts=orchestrator.ssh_options(cfg),
            say=lambda _h, _m: None,
            join=["10.0.0.5", "10.0.0.6"],
            results={h.address: HostResult(alias=h.address) for h in cfg.hosts},
        )
        orchestrator._set_http_addrs(run)  # no server of ours came up: the join targets are the API
        assert run.http_addrs == [want] and run.result.http_addr == want
