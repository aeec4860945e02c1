"""TXT parsing/validation and host classification: pure logic, hostile inputs included."""

from __future__ import annotations

import pytest

from foundation_cli.core import mdns_records as m
from foundation_cli.core.hosts import HostRecord


def good_fields(**over: str) -> dict[str, str]:
    ad = m.Advertisement(node="pi-1", role="none", version="0.1.0", ssh_port=22)
    fields = ad.fields()
    fields.update(over)
    return fields


def answer(text: bytes | None, *, addresses=("198.18.0.2",), instance="pi-1@198.18.0.2") -> m.Answer:
    return m.Answer(
        service_type=m.SERVICE_TYPE,
        instance=f"{instance}.{m.SERVICE_TYPE}",
        addresses=list(addresses),
        port=22,
        text=text,
    )


def test_build_then_parse_round_trips():
    fields = good_fields(cluster="c-1", role="server", dc="dc1")
    parsed, problems = m.parse_txt(m.build_txt(fields))
    assert problems == []
    assert parsed == fields
    known, problems = m.validate(parsed)
    assert problems == []


def test_unclaimed_machine_is_valid_and_unclaimed():
    rec = m.record_from_answer(answer(m.build_txt(good_fields())))
    assert "problems" not in rec.extra
    assert (rec.address, rec.name, rec.port, rec.role, rec.cluster_id) == ("198.18.0.2", "pi-1", 22, "none", None)
    assert m.classify(rec, cluster_id=None) == m.UNCLAIMED


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, "no TXT record"),
        (b"", "no TXT record"),
        (b"\x09node=", "truncated"),
        (m.build_txt(good_fields()) + b"\x06\xff\xfe=x\x80\x81", "not valid UTF-8"),
        (b"\x7f" + b"x" * 127 + b"\xff" * 20, "truncated"),
        (m.build_txt({"node": "a"}), "missing role"),
        (m.build_txt(good_fields(role="king")), "role must be one of"),
        (m.build_txt(good_fields(ssh="99999")), "ssh is not a port number"),
        (m.build_txt(good_fields(ssh="22; rm -rf /")), "ssh is not a port number"),
        (m.build_txt(good_fields(node="[bold red]x[/]")), "node has invalid characters"),
        (m.build_txt(good_fields(node="a\x1b[31mb")), "node has invalid characters"),
        (m.build_txt(good_fields(role="server")), "role server without a cluster id"),
        (m.build_txt(good_fields(txtvers="9")), "unsupported txtvers"),
        (m.build_txt(good_fields(cluster="x" * 200)), "cluster is too long"),
        (b"".join(bytes([250]) + b"k=" + b"v" * 248 for _ in range(6)), "TXT record too large"),
        (b"\x03=ab" + m.build_txt(good_fields()), "invalid key"),
    ],
)
def test_hostile_records_are_invalid_never_raise(text, problem):
    rec = m.record_from_answer(answer(text))
    assert m.classify(rec, cluster_id="ours") == m.INVALID
    assert problem in rec.extra["problems"]
    # Whatever survives into the record is display-safe.
    for value in (rec.name, rec.role, rec.cluster_id, rec.datacenter, rec.version):
        assert value is None or ("[" not in value and "\x1b" not in value)


def test_repeated_key_keeps_the_first_value():
    text = m.build_txt(good_fields()) + m.build_txt({"NODE": "evil"})
    parsed, problems = m.parse_txt(text)
    assert parsed["node"] == "pi-1" and problems == []


def test_no_address_or_garbage_addresses_are_invalid():
    rec = m.record_from_answer(answer(m.build_txt(good_fields()), addresses=["not-an-ip", "224.0.0.251"]))
    assert m.classify(rec, cluster_id=None) == m.INVALID
    assert "no usable address" in rec.extra["problems"]


def test_ipv4_preferred_over_ipv6():
    rec = m.record_from_answer(answer(m.build_txt(good_fields()), addresses=["fd00::5", "198.18.0.9"]))
    assert rec.address == "198.18.0.9"


def test_classification_this_other_and_spoofed():
    def rec(cluster: str, addr: str = "198.18.0.2") -> HostRecord:
        return m.record_from_answer(
            answer(m.build_txt(good_fields(cluster=cluster, role="client", dc="dc1")), addresses=[addr])
        )

    assert m.classify(rec("ours"), cluster_id="ours") == m.THIS_CLUSTER  # unverified (no members list)
    assert m.classify(rec("ours"), cluster_id="ours", members={"198.18.0.2"}) == m.THIS_CLUSTER
    spoofed = rec("ours", "198.18.0.7")
    assert m.classify(spoofed, cluster_id="ours", members={"198.18.0.2"}) == m.INVALID
    assert "not a member" in spoofed.extra["problems"]
    assert m.classify(rec("theirs"), cluster_id="ours") == m.OTHER_CLUSTER
    assert m.classify(rec("theirs"), cluster_id=None) == m.OTHER_CLUSTER


def test_ssh_service_answers_are_candidates():
    a = m.Answer(
        service_type="_ssh._tcp.local.",
        instance="raspberrypi._ssh._tcp.local.",
        addresses=["198.18.0.5"],
        port=2222,
        server="raspberrypi.local.",
    )
    rec = m.record_from_answer(a)
    assert (rec.address, rec.name, rec.port, rec.source) == ("198.18.0.5", "raspberrypi", 2222, "mdns-ssh")
    assert m.classify(rec, cluster_id="x") == m.CANDIDATE
    ws = m.Answer(service_type="_workstation._tcp.local.", instance="box [aa:bb]._workstation._tcp.local.")
    ws.addresses = ["198.18.0.6"]
    ws.port = 9
    rec = m.record_from_answer(ws)
    assert rec.port == 22 and "[" not in rec.name


def test_check_advertisement_rejects_what_browsers_would_reject():
    assert m.check_advertisement(m.Advertisement(node="ok", version="1")) == []
    assert m.check_advertisement(m.Advertisement(node="bad name", version="1"))
    assert m.check_advertisement(m.Advertisement(node="n", role="server", version="1"))


def test_safe_text_bounds_and_strips():
    assert m.safe_text("a\x00b[c]\\", 40) == "a?b?c??"
    assert len(m.safe_text("x" * 100, 10)) == 10


def test_link_local_ipv6_keeps_its_scope_global_does_not():
    text = m.build_txt(good_fields())
    assert m.record_from_answer(answer(text, addresses=["fe80::1%3"])).address == "fe80::1%3"
    assert m.record_from_answer(answer(text, addresses=["fd00::1%3"])).address == "fd00::1"
    assert m.record_from_answer(answer(text, addresses=["fe80::1%3;x"])).address == "fe80::1"
