"""Dry-run scripts replayed against a real Consul store exactly the planned value, and run nothing else.

Hostile keys and values (text and bytes, breakouts of comments, quotes, heredocs and URLs) are
planned through the real code path (the recording Consul client in a dry run, the kv facade),
rendered as the ``--dry-run`` script, checked with ``bash -n`` and run by bash with the real curl
against a real agent: the stored value equals the input and no injected command ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foundation_cli.facades.kv import KVStore, validate_key
from foundation_cli.raw import render
from foundation_cli.raw.address import ConsulAddress
from foundation_cli.raw.recorder import Recorder, use_recorder
from foundation_cli.tools.consul import Client
from tests.lab.cli import foundation

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]

SENTINEL_DIR = Path("/tmp/foundation-h4-sentinel")

BREAKOUTS = [
    "\ntouch {s} #",
    "'\ntouch {s}\n'",
    '"$(touch {s})"',
    "`touch {s}`",
    "\nFOUNDATION_EOF\ntouch {s}\n",
    "password=hunter2-$(touch {s})",
    "*",
    "!!",
]


def kv_raw(agent, key: str) -> bytes | None:
    """A key's raw value over plain HTTP (the key percent-encoded), ``None`` when absent."""
    url = f"{agent.http_addr}/v1/kv/{urllib.parse.quote(key, safe='/')}?raw"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def http_delete(agent, key: str) -> None:
    req = urllib.request.Request(f"{agent.http_addr}/v1/kv/{urllib.parse.quote(key, safe='/')}", method="DELETE")
    urllib.request.urlopen(req, timeout=10).close()


def _valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except Exception:  # noqa: BLE001
        return False
    return True


# Printable ASCII and Latin letters (Consul 1.8 answers 400 to some other code points, dry run or not).
_key_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x17F, blacklist_categories=("Cc", "Cf", "Zs")),
    min_size=1,
    max_size=20,
)
_keys = st.builds(
    lambda a, b: f"h4/{a}{b}", _key_text, st.sampled_from(["$(touch${IFS}{s})", "`x`", "'", '"', ";", ""])
)
_values = st.one_of(
    st.builds(
        lambda a, b, c: (a + b + c).encode(), st.text(max_size=20), st.sampled_from(BREAKOUTS), st.text(max_size=20)
    ),
    st.binary(max_size=48),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_keys, value=_values)
def test_replayed_script_stores_the_value_and_runs_nothing_else(consul_agent, key, value):
    sentinel = SENTINEL_DIR / "PWNED"
    SENTINEL_DIR.mkdir(exist_ok=True)
    key = key.replace("{s}", str(sentinel))
    value = value.replace(b"{s}", str(sentinel).encode())
    if not _valid_key(key):
        return
    recorder = Recorder(dry_run=True)
    with use_recorder(recorder):
        client = Client(ConsulAddress.parse(consul_agent.http_addr), recorder=recorder)
        KVStore(client).put(key, value)
    assert kv_raw(consul_agent, "foundation/kv/" + key) is None  # the dry run sent nothing
    refs = render.SecretRefs()
    script = render.script(recorder.operations, title=f"foundation kv put {key} --dry-run", refs=refs)
    for secret in refs.names:
        assert secret not in script
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
    env.update(CONSUL_HTTP_ADDR=consul_agent.http_addr, CONSUL_HTTP_TOKEN=consul_agent.token or "anonymous")
    env.update({name: secret for secret, name in refs.names.items()})
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0, script
    proc = subprocess.run(["bash"], input=script, text=True, capture_output=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr + script
    assert not sentinel.exists(), script
    assert kv_raw(consul_agent, "foundation/kv/" + key) == value
    http_delete(consul_agent, "foundation/kv/" + key)


def test_the_issue_example_through_the_cli(consul_agent, tmp_path):
    sentinel = tmp_path / "PWNED"
    value = f"x\ntouch {sentinel} #"
    proc = foundation(["kv", "put", "app/k", value, "--dry-run"], env=consul_agent.env)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "s.sh").write_text(proc.stdout)
    run = subprocess.run(["bash", str(tmp_path / "s.sh")], env=consul_agent.env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert not sentinel.exists()
    assert consul_agent.kv_get("foundation/kv/app/k") == value.encode()


def test_a_secret_shaped_value_replays_from_its_variable(consul_agent, tmp_path):
    value = "user=admin password=hunter2-H4 *"
    proc = foundation(["kv", "put", "app/db", value, "--dry-run"], env=consul_agent.env)
    assert proc.returncode == 0, proc.stderr
    assert "hunter2-H4" not in proc.stdout + proc.stderr
    (tmp_path / "s.sh").write_text(proc.stdout)
    missing = subprocess.run(["bash", str(tmp_path / "s.sh")], env=consul_agent.env, capture_output=True, text=True)
    assert missing.returncode != 0 and "set FOUNDATION_SECRET_1" in missing.stderr
    assert consul_agent.kv_get("foundation/kv/app/db") is None
    env = dict(consul_agent.env, FOUNDATION_SECRET_1="hunter2-H4")
    run = subprocess.run(["bash", str(tmp_path / "s.sh")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert consul_agent.kv_get("foundation/kv/app/db") == value.encode()


def test_other_write_commands_replay_hostile_values_exactly(fresh_consul, tmp_path):
    """config set / start-singleton / kv put with breakout values: the replay makes the state the command made."""
    from tests.lab.consul import start_agent

    sentinel = tmp_path / "PWNED"
    evil = f"x\ntouch {sentinel} #'$(touch {sentinel})`touch {sentinel}`\nFOUNDATION_EOF\n"
    steps = [
        ["config", "set", "app/evil", evil],
        ["kv", "put", "app/evil", evil],
        ["start-singleton", "evil", "--no-wait", "--env", f"E={evil.strip()}", "--", "sh", "-c", evil],
    ]
    other = start_agent(base_dir=tmp_path / "other")
    try:
        for step in steps:
            assert foundation(step, env=fresh_consul.env).returncode == 0, step
            dry = foundation(["--dry-run", *step], env=other.env)
            assert dry.returncode == 0 and dry.stdout.startswith("#!/usr/bin/env bash"), dry.stderr
            run = subprocess.run(["bash"], input=dry.stdout, env=other.env, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr + dry.stdout
            assert not sentinel.exists(), dry.stdout
        for prefix in ("foundation/config/", "foundation/kv/", "foundation/services/"):
            assert fresh_consul.kv_dump(prefix) == other.kv_dump(prefix), prefix
    finally:
        other.close()
