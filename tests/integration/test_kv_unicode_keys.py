"""Any key the CLI accepts is stored by real Consul 1.8.7, or refused with one clear line (never a bare 400).

Consul answers 400 with an empty body to keys holding characters Go's
``unicode.IsPrint`` rejects (soft hyphen, zero-width space, private use,
unassigned); ``validate_key`` refuses those before a request, and the gateway
names the 400 for characters assigned after Consul's Go release.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from foundation_cli.errors import UsageError
from foundation_cli.facades.kv import KVStore, validate_key
from foundation_cli.raw.address import ConsulAddress
from foundation_cli.tools.consul import Client

# Every code point but surrogates (refused as "not valid UTF-8" before anything else, tested in unit tests).
_char = st.characters(blacklist_categories=("Cs",))
_keys = st.builds(lambda a: f"uni/{a}", st.text(_char, min_size=1, max_size=6))


@pytest.mark.parametrize("key", ["uni/a\u00adb", "uni/zero\u200bwidth", "uni/bom\ufeff", "uni/\ue000", "uni/\u0378"])
def test_keys_consul_refuses_are_refused_before_any_request(key):
    with pytest.raises(UsageError, match="is not a printable character"):
        validate_key(key)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_keys)
@example(key="uni/\U0001fad0")  # BLUEBERRIES, Unicode 13: printable to Python, unknown to Consul 1.8.7's Go
@example(key="uni/\u00e9\u0301\U0001f600")
def test_an_accepted_key_round_trips_or_fails_with_one_line(consul_agent, key):
    store = KVStore(Client(ConsulAddress.parse(consul_agent.http_addr), token=consul_agent.token))
    try:
        validate_key(key)
    except UsageError as exc:
        assert "\n" not in exc.message
        return
    try:
        store.put(key, b"v")
    except UsageError as exc:  # a character newer than Consul's Unicode tables: named, one line
        assert "\n" not in exc.message and "400" in exc.message, exc.message
        assert exc.message.isascii(), exc.message  # the path is escaped, not printed raw
        return
    assert store.get(key).value == b"v"
    store.delete(key)
