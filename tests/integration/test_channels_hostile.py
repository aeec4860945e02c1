"""`listen` against hostile events on a real Consul agent: invalid envelopes, NUL, escape sequences."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.test_channels import finish, start_listener

pytestmark = pytest.mark.timeout(120)


def fire(agent, consul_bin: str, channel: str, payload: str) -> None:
    subprocess.run(
        [consul_bin, "event", f"-name=foundation:{channel}", payload],
        env=agent.env,
        check=True,
        capture_output=True,
        timeout=10,
    )


def test_exec_survives_an_envelope_whose_id_holds_a_nul(consul_agent, consul_bin, tmp_path) -> None:
    out_file = tmp_path / "got"
    cmd = f'printf "%s|%s\\n" "$FOUNDATION_MESSAGE_ID" "$FOUNDATION_SENDER" >> {out_file}'
    listener = start_listener(consul_agent, "hostile", "--exec", cmd, "--count", "2", "--timeout", "30s")
    try:
        bad = {"v": 1, "id": "1764290000123-4f9a1c\u0000x", "t": 1.0, "n": "evil\nX=1", "ct": "text/plain", "d": "x"}
        fire(consul_agent, consul_bin, "hostile", json.dumps(bad))
        fire(consul_agent, consul_bin, "hostile", json.dumps({**bad, "id": "1764290000123-4f9a1c", "n": "node-1"}))
        code, _out, err = finish(listener)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert code == 0, err
    assert "internal error" not in err
    lines = out_file.read_text().splitlines()
    # The invalid envelope is passed on as a raw event (Consul's event id, no claimed sender); the valid one as is.
    assert len(lines) == 2 and lines[0].endswith("|") and "\x00" not in lines[0]
    assert lines[1] == "1764290000123-4f9a1c|node-1"


def test_escape_sequences_in_messages_are_shown_not_played(consul_agent, consul_bin) -> None:
    listener = start_listener(consul_agent, "esc", "--count", "2", "--timeout", "30s")
    try:
        good = {"v": 1, "id": "1764290000123-4f9a1c", "t": 1.0, "n": "node-1", "ct": "text/plain"}
        fire(consul_agent, consul_bin, "esc", json.dumps({**good, "d": "a\x1b]0;pwned\x07b\x1b[2J\u009b31m"}))
        fire(consul_agent, consul_bin, "esc", "raw \x1b[31mred")
        code, out, err = finish(listener)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\u009b" not in out
    assert "a\\x1b]0;pwned\\x07b\\x1b[2J\\x9b31m" in out
    assert "raw \\x1b[31mred" in out
