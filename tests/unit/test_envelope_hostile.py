"""The envelope parser against untrusted payloads: anyone who can fire a Consul event writes them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_cli.core.envelope import CONTENT_TYPE_RE, ID_RE, SENDER_RE, Envelope

GOOD = {"v": 1, "id": "1764290000123-4f9a1c", "t": 1764290000.123, "n": "node-1", "ct": "text/plain", "d": "hi"}

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _check(raw) -> None:
    try:
        env = Envelope.from_wire(raw)
    except ValueError:
        return
    assert ID_RE.match(env.id)
    assert env.sender == "" or SENDER_RE.match(env.sender)
    assert CONTENT_TYPE_RE.match(env.content_type)
    assert env.data is not None or env.ref in ("blobs", "history")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_value_error(raw):
    _check(raw)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "id", "t", "n", "ct", "d", "b", "r", "sz", "h"]), _json))
def test_any_json_fields_parse_or_raise_value_error(fields):
    _check(json.dumps({**GOOD, **fields}))


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["id", "n", "ct"]), value=st.text(max_size=40))
def test_fields_are_valid_shapes_or_the_envelope_is_refused(field, value):
    _check(json.dumps({**GOOD, field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "1764290000123-4f9a1c\u0000"),
        ("id", "../../services/evil"),
        ("n", "node-1\nFOUNDATION_X=1"),
        ("n", "\x1b]0;pwned\x07"),
        ("ct", "text/plain\r\nX: y"),
        ("ct", "text"),
        ("t", "soon"),
        ("t", float("inf")),
        ("sz", -1),
        ("h", "../x"),
        ("d", {"not": "text"}),
        ("d", "\ud800"),
    ],
)
def test_hostile_fields_are_refused(field, value):
    raw = json.dumps({**GOOD, field: value})
    with pytest.raises(ValueError):
        Envelope.from_wire(raw)


def test_a_good_envelope_round_trips():
    env = Envelope.from_wire(json.dumps(GOOD))
    assert Envelope.from_wire(env.to_wire()) == env
    assert Envelope.from_wire(json.dumps({**GOOD, "ct": "text/plain; charset=utf-8"})).content_type.endswith("utf-8")
