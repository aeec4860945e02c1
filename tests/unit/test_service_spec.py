"""Service spec model and validation (pure logic), plus the placement timing invariant."""

from __future__ import annotations

import pytest

from foundation_cli.core.service_spec import (
    ServiceSpec,
    check_update,
    parse_env,
    parse_node_meta,
    validate_name,
)
from foundation_cli.core.timing import Timing
from foundation_cli.errors import ConflictError, UsageError


def spec(**kw) -> ServiceSpec:
    base = {"name": "web", "mode": "singleton", "command": ["python3", "app.py"]}
    base.update(kw)
    return ServiceSpec(**base)


@pytest.mark.parametrize("name", ["web", "a", "cron-1", "x" * 63, "9lives"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name,needle",
    [
        ("", "must not be empty"),
        ("Web", "lower case"),
        ("-web", "DNS label"),
        ("web-", "DNS label"),
        ("we_b", "DNS label"),
        ("we.b", "DNS label"),
        ("x" * 64, "DNS label"),
        ("foundation-agent", "reserved"),
    ],
)
def test_invalid_names_one_line(name, needle):
    with pytest.raises(UsageError) as err:
        validate_name(name)
    assert needle in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"command": []}, "empty command"),
        ({"command": [" "]}, "empty command"),
        ({"mode": "daemon"}, "invalid mode"),
        ({"restart": "sometimes"}, "--restart"),
        ({"port": 0}, "--port"),
        ({"port": 70000}, "--port"),
        ({"check_http": "localhost:80"}, "--check-http"),
        ({"check_tcp": "nohost"}, "--check-tcp"),
        ({"check_http": "http://a/", "check_tcp": "a:1"}, "at most one"),
        ({"cwd": "relative/dir"}, "--cwd"),
        ({"tags": ["has space"]}, "--tag"),
    ],
)
def test_spec_validation_errors(kw, needle):
    with pytest.raises(UsageError) as err:
        spec(**kw).validate()
    assert needle in err.value.message


def test_pairs_parsing():
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    assert parse_node_meta(["role=db"]) == {"role": "db"}
    for bad in (["A"], ["=1"], ["1A=x"]):
        with pytest.raises(UsageError):
            parse_env(bad)


def test_json_round_trip_is_canonical():
    s = spec(env={"B": "2", "A": "1"}, tags=["t"], port=8080, node_meta={"role": "web"})
    raw = s.to_json()
    again = ServiceSpec.from_json(raw)
    assert again == s
    assert again.to_json() == raw
    assert b" " not in raw.replace(b"app.py", b"")  # compact, deterministic bytes
    with pytest.raises(UsageError):
        ServiceSpec.from_json(b"not json")
    with pytest.raises(UsageError):
        ServiceSpec.from_json(b'{"name": "x"}')


def test_digest_changes_with_generation_and_command():
    a = spec()
    assert a.digest() == spec().digest()
    assert a.digest() != spec(generation=2).digest()
    assert a.digest() != spec(command=["other"]).digest()


def test_eligibility():
    s = spec(node_meta={"role": "db"})
    assert s.eligible({"role": "db", "zone": "a"})
    assert not s.eligible({"role": "web"})
    assert not s.eligible({})
    assert spec().eligible({})


def test_update_rules():
    old = spec(generation=3)
    same = check_update(old, spec())
    assert same.generation == 3  # unchanged spec keeps its generation: nothing restarts
    changed = check_update(old, spec(command=["python3", "v2.py"]))
    assert changed.generation == 4
    with pytest.raises(ConflictError) as err:
        check_update(old, spec(mode="replicated"))
    assert "cannot silently become replicated" in err.value.message
    assert check_update(None, spec()).generation == 1


def test_timing_invariant():
    t = Timing().check()
    assert t.fence_timeout + t.fence_kill_grace + t.fence_margin < t.lock_delay
    assert t.lock_delay_text() == "2500ms"
    with pytest.raises(UsageError):
        Timing(lock_delay=1.0).check()
    with pytest.raises(UsageError):
        Timing.from_env({"FOUNDATION_FENCE_TIMEOUT": "5"})
    assert Timing.from_env({"FOUNDATION_LOCK_DELAY": "10", "FOUNDATION_FENCE_TIMEOUT": "4"}).fence_timeout == 4.0
    with pytest.raises(UsageError):
        Timing.from_env({"FOUNDATION_LOCK_DELAY": "soon"})
