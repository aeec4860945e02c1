"""Envelope encode/decode, ids, --since parsing, inline budget and event filters (pure logic)."""

from __future__ import annotations

import json

import pytest

from foundation_cli.core import durations, envelope
from foundation_cli.core.envelope import Envelope, parse_since
from foundation_cli.errors import UsageError
from foundation_cli.facades.channels import validate_filters


def make(data: bytes, ctype: str = "text/plain") -> Envelope:
    return Envelope(id=envelope.new_id(1764290000.123), time=1764290000.123, sender="n1", content_type=ctype, data=data)


@pytest.mark.parametrize("data", [b"hello", "héllo ✓".encode(), b"", b"\x00\x01\xff binary", b'{"a": [1, 2]}'])
def test_round_trip_keeps_bytes(data: bytes) -> None:
    message = make(data)
    back = Envelope.from_wire(message.to_wire())
    assert back.data == data
    assert (back.id, back.sender, back.content_type, back.time) == (message.id, "n1", "text/plain", 1764290000.123)


def test_binary_travels_as_base64_and_text_as_text() -> None:
    assert b'"b":' in make(b"\xff\xfe").to_wire()
    assert b'"d":"hi"' in make(b"hi").to_wire()


def test_reference_carries_size_and_digest_and_verifies() -> None:
    full = make(b"x" * 4096)
    ref = Envelope.from_wire(full.as_reference("blobs").to_wire())
    assert ref.data is None and ref.ref == "blobs" and ref.size == 4096
    ref.verify(Envelope.from_wire(full.to_wire()))
    tampered = make(b"y" * 4096)
    tampered.id = full.id
    with pytest.raises(ValueError, match="digest"):
        ref.verify(tampered)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"plain text from consul event",
        b"[1,2]",
        b'{"v":2,"id":"x"}',
        b'{"v":1,"id":"x"}',
        b'{"v":1,"id":"x","r":"etc"}',
    ],
)
def test_non_envelopes_are_rejected(raw) -> None:
    with pytest.raises(ValueError):
        Envelope.from_wire(raw)


def test_json_content_is_parsed_in_listen_output() -> None:
    out = make(b'{"k":1}', "application/json").to_dict()
    assert out["data"] == {"k": 1} and out["encoding"] == "json"
    assert make(b"\xff").to_dict()["encoding"] == "base64"
    json.dumps(out)


def test_ids_sort_by_time_and_embed_it() -> None:
    a, b = envelope.new_id(1000.0), envelope.new_id(1000.5)
    assert a < b and envelope.id_time(a) == 1000.0
    assert envelope.id_time("nope") is None


def test_parse_since() -> None:
    assert parse_since("10m", now=1000.0).from_time == 400.0
    assert parse_since("1h30m", now=10000.0).from_time == 10000.0 - 5400
    assert parse_since("all").from_time == 0.0
    since = parse_since("1764290000123-abcdef")
    assert since.includes("1764290000124-000000", 0) and not since.includes("1764290000123-abcdef", 0)
    for bad in ("", "10", "yesterday", "5 m", "-3s"):
        with pytest.raises(UsageError):
            parse_since(bad)


@pytest.mark.parametrize("name", ["deploys", "a", "web.v2_x-1", "_control", "x" * 64])
def test_good_channels(name: str) -> None:
    assert envelope.validate_channel(name) == name


@pytest.mark.parametrize("name", ["", "_private", "-x", "has space", "a/b", "x" * 65, "ü"])
def test_bad_channels(name: str) -> None:
    with pytest.raises(UsageError):
        envelope.validate_channel(name)


def test_inline_budget_shrinks_with_name_and_filters() -> None:
    assert envelope.inline_budget("a") == envelope.INLINE_LIMIT
    long = envelope.inline_budget("x" * 64)
    assert long < envelope.INLINE_LIMIT
    assert envelope.inline_budget("x" * 64, node="n" * 20, service="s") == long - 21


def test_filters() -> None:
    validate_filters("web-.*", "api", "blue")
    validate_filters(None, None, None)
    with pytest.raises(UsageError, match="--tag needs --service"):
        validate_filters(None, None, "blue")
    with pytest.raises(UsageError, match="regular expression"):
        validate_filters("web-(", None, None)
    with pytest.raises(UsageError, match="empty"):
        validate_filters("", None, None)


def test_durations() -> None:
    assert durations.parse("500ms") == 0.5 and durations.parse("2d") == 172800
    assert durations.format(0.25) == "250ms" and durations.format(300) == "5m" and durations.format(1.5) == "1.5s"
    with pytest.raises(ValueError):
        durations.parse("5")
