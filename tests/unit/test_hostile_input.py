"""Hostile input, property-based (hypothesis): no traceback, no internal error, ever.

Untrusted input reaches foundation through foundation.yaml, names (service,
channel, config key), KV keys and values, broadcast payloads, durations and any
command line. Every generated case runs the real CLI in-process (Typer's
CliRunner) against a dead Consul address (127.0.0.1:1): only parsing and
validation matter here, so the answer is a usage error (exit 2, one ``error:``
line naming the place), "cannot reach Consul" (exit 3) or help — never
``internal error`` (exit 1 with a bug report hint) or a Python exception.

Examples per property are bounded (``max_examples``) so the file runs in
seconds; hypothesis keeps the failing examples it finds in .hypothesis/.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from foundation_cli.commands.app import app
from foundation_cli.core import cluster_config, durations
from foundation_cli.errors import FoundationError

DEAD = "http://127.0.0.1:1"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text as a shell hands it over: any Unicode, and bytes that are not UTF-8 (Python's surrogateescape).
raw_bytes = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))
hostile_text = st.one_of(
    st.text(max_size=40),
    raw_bytes,
    st.sampled_from(["", " ", "-", "--", "-5", "0", "nan", "inf", "1e999", "a/b", "../x", "a\nb", "\x00", "[red]x[/]"]),
)
# Option values must not start with '-' to stay values (click would take them as options: a usage error too).
value_text = hostile_text.filter(lambda t: not t.startswith("-"))


def run(args: list[str], input: bytes | str | None = None):
    result = CliRunner().invoke(app, args, input=input, env={"CONSUL_HTTP_ADDR": DEAD, "NO_COLOR": "1"})
    return result


def assert_clean(result, places: tuple[str, ...] = ()) -> None:
    """No exception escaped, no internal error; a usage error is one error line naming the place."""
    out = (result.stdout or "") + (result.stderr or "")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out and "internal error" not in out, out
    assert result.exit_code in (0, 2, 3, 5, 6), (result.exit_code, out)
    if result.exit_code == 2:
        errors = [ln for ln in (result.stderr or "").splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, result.stderr
        if places:
            line = errors[0].lower()
            assert any(p.lower() in line for p in places), (places, errors[0])


# -- durations -----------------------------------------------------------------------------------
@FAST
@given(hostile_text)
def test_durations_are_positive_finite_or_refused(text):
    try:
        value = durations.parse_positive(text)
    except ValueError as exc:
        assert "duration" in str(exc)
    else:
        assert math.isfinite(value) and value > 0


@pytest.mark.parametrize("bad", ["-5", "0", "-1s", "nan", "inf", "1e999", "", "5 m"])
def test_listen_timeout_refuses_non_positive(bad):
    result = run(["listen", "ch", "--timeout", bad])
    assert result.exit_code == 2, result.stderr
    assert_clean(result, ("--timeout",))


@FAST
@given(value_text)
def test_timeout_options_never_crash(text):
    assert_clean(run(["listen", "ch", "--timeout", text]), ("--timeout",))


# -- foundation.yaml -----------------------------------------------------------------------------
yaml_ish = st.one_of(
    st.text(max_size=200),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)),
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=12,
    ).map(lambda doc: __import__("json").dumps(doc)),  # JSON is YAML: deep, typed, odd structures
    st.dictionaries(
        st.sampled_from(["hosts", "ssh", "servers", "datacenter", "ports", "acl", "tls", "agent", "consul", "x"]),
        st.one_of(st.text(max_size=12), st.integers(), st.lists(st.text(max_size=12), max_size=3), st.none()),
        max_size=4,
    ).map(lambda doc: __import__("json").dumps(doc)),
)


@FAST
@given(yaml_ish)
def test_foundation_yaml_parses_or_names_the_problem(text):
    try:
        cluster_config.parse(text)
    except FoundationError as exc:
        assert exc.exit_status == 2 and "\n" not in exc.message.strip(), exc.message


@FAST
@given(st.binary(max_size=200))
def test_foundation_yaml_bytes_via_the_cli(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("yaml") / "foundation.yaml"
    path.write_bytes(data)
    assert_clean(run(["config", "show", "--config", str(path)]), ("foundation.yaml", str(path)))


# -- names, keys, values, payloads ---------------------------------------------------------------
@FAST
@given(value_text)
def test_service_names(name):
    assert_clean(run(["start-singleton", name, "--no-wait", "--", "true"]), ("name",))
    assert_clean(run(["stop", name]), ("name",))


@FAST
@given(value_text, value_text)
def test_channel_names_and_payloads(channel, payload):
    assert_clean(run(["broadcast", channel, payload]), ("channel", "payload", "message"))


@FAST
@given(st.text(max_size=20).filter(lambda t: not t.startswith("-")), st.binary(max_size=2000))
def test_binary_payload_on_stdin(channel, payload):
    assert_clean(run(["broadcast", channel or "ch", "-"], input=payload), ("channel", "payload", "message"))


@FAST
@given(value_text, value_text)
def test_config_keys_and_values(key, value):
    assert_clean(run(["config", "set", key, value]), ("key", "value"))


@FAST
@given(st.sampled_from(["agent.log_level", "restart.backoff", "singleton.lock_delay", "x.y"]), st.binary(max_size=300))
def test_config_values_on_stdin(key, value):
    assert_clean(run(["config", "set", key, "-"], input=value), ("value", key))


@FAST
@given(value_text, st.binary(max_size=600))
def test_kv_keys_and_values(key, value):
    assert_clean(run(["kv", "put", key, "-"], input=value), ("key", "value"))
    assert_clean(run(["kv", "get", key]), ("key",))


# -- any command line ----------------------------------------------------------------------------
COMMANDS = [
    ["ps"],
    ["logs"],
    ["status"],
    ["services"],
    ["discover"],
    ["listen"],
    ["broadcast"],
    ["kv", "get"],
    ["kv", "put"],
    ["config", "get"],
    ["config", "set"],
    ["start-singleton"],
    ["start-replicated"],
    ["restart"],
    ["stop"],
    ["optimize"],
    ["drain"],
]
WORDS = st.one_of(
    hostile_text,
    st.sampled_from(
        ["--json", "--explain", "--dry-run", "-q", "-v", "--timeout", "--node", "--port", "--env", "--cwd"]
        + ["--check-http", "--restart", "--count", "--window", "--near", "-n", "--follow", "--", "x=1", "99999"]
    ),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(COMMANDS), st.lists(WORDS, max_size=6))
def test_any_command_line(command, words):
    assert_clean(run([*command, *words]))
