"""Agent-owned config keys: parsing, the lock-delay/fence-timeout safety check, applying a KV read."""

from __future__ import annotations

import pytest

from foundation_cli.agent.config_apply import apply_items
from foundation_cli.core import live_settings
from foundation_cli.core.live_settings import LiveSettings
from foundation_cli.errors import UsageError
from foundation_cli.facades import config as config_facade


def item(key: str, value: str, index: int) -> dict:
    return {"Key": "foundation/config/" + key, "Value": value.encode(), "ModifyIndex": index}


def test_owned_values_parse() -> None:
    assert live_settings.validate("agent.log_level", "DEBUG") == "debug"
    assert live_settings.validate("restart.backoff", "1500ms") == 1.5
    assert live_settings.validate("app/anything", "free text") == "free text"
    for key, bad in (("agent.log_level", "loud"), ("singleton.lock_delay", "2 minutes"), ("restart.backoff", "2h")):
        with pytest.raises(ValueError):
            live_settings.validate(key, bad)


def test_unsafe_timing_is_refused() -> None:
    assert live_settings.check_timing({"singleton.lock_delay": 10.0}) is None
    assert "lock-delay" in live_settings.check_timing({"singleton.lock_delay": 1.0})
    with pytest.raises(UsageError, match="unsafe"):
        config_facade.validate_value("singleton.fence_timeout", "30s", current={"singleton.lock_delay": "15s"})
    config_facade.validate_value("singleton.fence_timeout", "5s", current={"singleton.lock_delay": "15s"})


@pytest.mark.parametrize("key", ["", "/x", "a//b", "a b", "x/", "ü", "a" * 300])
def test_bad_keys(key: str) -> None:
    with pytest.raises(UsageError):
        config_facade.validate_key(key)


def test_apply_items_sets_rejects_and_unsets() -> None:
    live = LiveSettings()
    changes = []
    live.subscribe(lambda k, v: changes.append((k, v)))
    versions, applied, rejected = apply_items(
        [item("restart.backoff", "2s", 7), item("agent.log_level", "loud", 8), item("app/x", "1", 9)], live
    )
    assert versions == {"restart.backoff": 7, "agent.log_level": 8, "app/x": 9}
    assert applied == {"restart.backoff": "2s"} and "agent.log_level" in rejected
    assert live.get("restart.backoff") == 2.0 and live.version("restart.backoff") == 7
    assert live.get("agent.log_level", "info") == "info"
    # An unsafe pair is rejected as a whole and the previous values stay.
    _v, _a, rejected = apply_items(
        [item("singleton.lock_delay", "1s", 10), item("singleton.fence_timeout", "5s", 11)], live
    )
    assert set(rejected) == {"singleton.lock_delay", "singleton.fence_timeout"}
    assert live.get("singleton.lock_delay") is None
    apply_items([], live)
    assert live.get("restart.backoff") is None
    assert ("restart.backoff", 2.0) in changes and ("restart.backoff", None) in changes


def test_live_singleton_timings_come_as_one_safe_pair_and_restart_backoff_is_live():
    from foundation_cli.agent.placement import restart_delay
    from foundation_cli.core.live_settings import LIVE
    from foundation_cli.core.timing import Timing

    base = Timing()
    try:
        LIVE.set("singleton.lock_delay", 10.0, 1)
        LIVE.set("singleton.fence_timeout", 5.0, 2)
        live = base.with_live(LIVE)
        assert (live.lock_delay, live.fence_timeout) == (10.0, 5.0)
        LIVE.set("singleton.fence_timeout", 50.0, 3)  # unsafe with a 10 s lock-delay: the base pair stays
        assert base.with_live(LIVE) == base
        LIVE.set("restart.backoff", 2.0, 4)
        LIVE.set("restart.backoff_max", 5.0, 5)
        assert restart_delay(1) == 4.0 and restart_delay(3) == 5.0
    finally:
        for key in ("singleton.lock_delay", "singleton.fence_timeout", "restart.backoff", "restart.backoff_max"):
            LIVE.unset(key)
    assert base.with_live(LIVE) is base and restart_delay(0) == 0.5
