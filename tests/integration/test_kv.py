"""`foundation kv` against a real Consul: --explain shows what was sent, --dry-run replays, errors map to exit codes."""

from __future__ import annotations

import base64
import json
import shlex
import socket
import urllib.parse
import urllib.request

import pytest

from tests.lab.cli import bash, foundation
from tests.lab.consul import ConsulAgent, http_get

PREFIX = "foundation/kv/"


def kv_state(agent: ConsulAgent) -> dict[str, tuple[bytes, int]]:
    """Key -> (value, flags) for the whole KV store."""
    status, body = http_get(f"{agent.http_addr}/v1/kv/?recurse", token=agent.token)
    if status == 404:
        return {}
    assert status == 200, body
    return {e["Key"]: (base64.b64decode(e["Value"] or ""), e["Flags"]) for e in json.loads(body)}


def set_state(agent: ConsulAgent, state: dict[str, tuple[bytes, int]]) -> None:
    """Make the KV store exactly ``state`` (plain HTTP, independent of Foundation)."""

    def send(method: str, path: str, data: bytes | None = None) -> None:
        req = urllib.request.Request(agent.http_addr + path, data=data, method=method)
        if agent.token:
            req.add_header("X-Consul-Token", agent.token)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    send("DELETE", "/v1/kv/?recurse")
    for key, (value, flags) in state.items():
        send("PUT", f"/v1/kv/{urllib.parse.quote(key)}?flags={flags}", value)
    assert kv_state(agent) == state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_error(proc, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), proc.stderr
    return lines[0]


# -- the done-when checks ---------------------------------------------------------------------------


def test_put_explain_prints_curl_and_consul_lines_and_stores(consul_agent):
    proc = foundation(["kv", "put", "a/b", "hello", "--explain"], env=consul_agent.env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    curl_lines = [line for line in lines if line.startswith("$ curl")]
    cli_lines = [line.strip() for line in lines if "consul kv put" in line]
    assert curl_lines == [
        f"$ curl -sS --fail-with-body -X PUT {consul_agent.http_addr}/v1/kv/foundation/kv/a/b --data-binary hello"
    ]
    assert cli_lines == ["# consul: consul kv put foundation/kv/a/b hello"]
    assert consul_agent.kv_get("foundation/kv/a/b") == b"hello"


def test_explained_lines_do_what_foundation_did(fresh_consul):
    """The printed curl and consul lines, run by hand, produce the same store."""
    proc = foundation(["kv", "put", "shown/x", "it's a value", "--explain"], env=fresh_consul.env)
    assert proc.returncode == 0, proc.stderr
    shown = kv_state(fresh_consul)
    curl_line = next(line[2:] for line in proc.stderr.splitlines() if line.startswith("$ curl"))
    cli_line = next(line.split("# consul: ", 1)[1] for line in proc.stderr.splitlines() if "# consul: " in line)
    for line in (curl_line, cli_line):
        set_state(fresh_consul, {})
        result = bash(line, env=fresh_consul.env)
        assert result.returncode == 0, (line, result.stderr)
        assert kv_state(fresh_consul) == shown, line


def test_dry_run_put_replayed_on_a_fresh_agent_gives_the_same_kv(consul_agent, fresh_consul):
    set_state(consul_agent, {})
    dry = foundation(["kv", "put", "a/b", "hello", "--dry-run"], env=consul_agent.env)
    assert dry.returncode == 0, dry.stderr
    assert kv_state(consul_agent) == {}, "--dry-run changed the store"
    assert dry.stdout.startswith("#!/usr/bin/env bash\n")

    real = foundation(["kv", "put", "a/b", "hello"], env=consul_agent.env)
    assert real.returncode == 0, real.stderr
    replay = bash(dry.stdout, env=fresh_consul.env)
    assert replay.returncode == 0, replay.stderr
    assert kv_state(fresh_consul) == kv_state(consul_agent) == {"foundation/kv/a/b": (b"hello", 0)}


BINARY = bytes(range(256)) + b"\x00tail"

START = {
    PREFIX + "keep": (b"kept", 0),
    PREFIX + "old/one": (b"1", 0),
    PREFIX + "old/two": (b"2", 5),
    "outside/prefix": (b"untouched", 0),
}


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["kv", "put", "new/text", "x y 'quoted' $HOME `cmd` 100%"], None),
        (["kv", "put", "new/at", "@/etc/passwd"], None),
        (["kv", "put", "new/dash", "-"], b"-n starts with a dash"),
        (["kv", "put", "new/binary", "-"], BINARY),
        (["kv", "put", "new/empty", ""], None),
        (["kv", "put", "new/flags", "v", "--flags", "42"], None),
        (["kv", "put", "new/cas", "v", "--cas", "0"], None),
        (["kv", "put", "keep", "overwritten"], None),
        (["kv", "put", "ünïcödé/ключ", "значение ✓"], None),
        (["kv", "delete", "keep"], None),
        (["kv", "delete", "old", "--recurse"], None),
        (["kv", "delete", "does/not/exist"], None),
    ],
    ids=["text", "at-sign", "dash", "binary", "empty", "flags", "cas", "overwrite", "unicode", "delete"]
    + ["delete-recurse", "delete-missing"],
)
def test_dry_run_script_replays_to_the_same_state_as_the_command(consul_agent, args, stdin):
    env = consul_agent.env
    set_state(consul_agent, START)
    dry = foundation([*args, "--dry-run"], env=env, input=stdin)
    assert dry.returncode == 0, dry.stderr
    assert kv_state(consul_agent) == START, "--dry-run changed the store"
    script = dry.stdout.decode() if isinstance(dry.stdout, bytes) else dry.stdout

    replay = bash(script, env=env)
    assert replay.returncode == 0, (script, replay.stderr)
    after_script = kv_state(consul_agent)

    set_state(consul_agent, START)
    real = foundation(args, env=env, input=stdin)
    assert real.returncode == 0, real.stderr
    assert kv_state(consul_agent) == after_script
    if stdin == BINARY:
        assert after_script[PREFIX + "new/binary"] == (BINARY, 0)


def test_dry_run_json_lists_the_operations_and_changes_nothing(consul_agent):
    set_state(consul_agent, {})
    proc = foundation(["kv", "put", "j/k", "v", "--dry-run", "--json"], env=consul_agent.env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["dry_run"] is True
    [op] = data["operations"]
    assert (op["kind"], op["method"], op["body"], op["dry_run"]) == ("consul-http", "PUT", "v", True)
    assert op["url"].endswith("/v1/kv/foundation/kv/j/k")
    assert kv_state(consul_agent) == {}


def test_get_list_json_and_binary_roundtrip(consul_agent):
    set_state(consul_agent, {PREFIX + "r/bin": (BINARY, 3), PREFIX + "r/text": (b"hello", 0)})
    got = foundation(["kv", "get", "r/bin"], env=consul_agent.env, input=b"")
    assert got.returncode == 0 and got.stdout == BINARY
    meta = json.loads(foundation(["kv", "get", "r/text", "--json"], env=consul_agent.env, check=True).stdout)
    assert (meta["key"], meta["value"], meta["flags"]) == ("r/text", "hello", 0)
    listed = json.loads(foundation(["kv", "list", "r/", "--json"], env=consul_agent.env, check=True).stdout)
    assert [(e["key"], e["encoding"]) for e in listed] == [("r/bin", "base64"), ("r/text", "utf-8")]
    assert base64.b64decode(listed[0]["value"]) == BINARY


# -- errors -------------------------------------------------------------------------------------------


def test_unreachable_consul_is_exit_3_with_one_line(consul_agent):
    addr = f"http://127.0.0.1:{free_port()}"
    proc = foundation(["kv", "get", "a/b", "--consul-addr", addr])
    line = assert_one_line_error(proc, 3)
    assert line == f"error: cannot reach Consul at {addr}: connection refused — is the agent running?"
    assert "foundation up" in proc.stderr


def test_not_found_is_exit_5(consul_agent):
    assert_one_line_error(foundation(["kv", "get", "no/such/key"], env=consul_agent.env), 5)


def test_cas_conflict_is_exit_6_and_keeps_the_value(consul_agent):
    set_state(consul_agent, {PREFIX + "c": (b"first", 0)})
    assert_one_line_error(foundation(["kv", "put", "c", "second", "--cas", "0"], env=consul_agent.env), 6)
    assert kv_state(consul_agent) == {PREFIX + "c": (b"first", 0)}


BAD_KEYS = ["/abs", "a//b", "a/../b", "./a", "a b", "tab\there", "nl\nx", "x" * 600, "ctl\x01"]


def test_bad_key_names_are_exit_2_and_store_nothing(consul_agent):
    """The whole matrix in-process (CliRunner); one of each command as a real subprocess."""
    from typer.testing import CliRunner

    from foundation_cli.commands.app import app

    set_state(consul_agent, START)
    runner = CliRunner()
    for key in BAD_KEYS:
        for args in (["kv", "put", key, "v"], ["kv", "get", key], ["kv", "delete", key], ["kv", "list", key]):
            result = runner.invoke(app, [*args, "--consul-addr", consul_agent.http_addr])
            assert result.exit_code == 2, (args, result.output)
            assert result.stderr.startswith("error: invalid key"), (args, result.stderr)
            assert result.exception is None or isinstance(result.exception, SystemExit)
    for args in (["kv", "put", "a b", "v"], ["kv", "get", "/abs"], ["kv", "delete", "a/../b"]):
        assert "invalid key" in assert_one_line_error(foundation(args, env=consul_agent.env), 2)
    assert kv_state(consul_agent) == START


def test_empty_key_is_exit_2(consul_agent):
    assert_one_line_error(foundation(["kv", "put", "", "v"], env=consul_agent.env), 2)
    assert_one_line_error(foundation(["kv", "delete", ""], env=consul_agent.env), 2)


# -- ACLs and secrets --------------------------------------------------------------------------------


def test_403_is_exit_4(consul_agent_acl):
    env = consul_agent_acl.env
    assert_one_line_error(foundation(["kv", "put", "a", "v"], env=env), 4)
    assert_one_line_error(foundation(["kv", "get", "a", "--token", "00000000-bad0-bad0-bad0-000000000000"], env=env), 4)
    # With the right token the same command works.
    ok = foundation(["kv", "put", "a", "v", "--token", consul_agent_acl.token], env=env)
    assert ok.returncode == 0, ok.stderr
    assert consul_agent_acl.kv_get(PREFIX + "a") == b"v"


def test_token_never_appears_in_any_output(consul_agent_acl):
    agent = consul_agent_acl
    token = agent.token
    wrong = "deadbeef-0000-4000-8000-00000000beef"
    env = agent.env
    unreachable = f"http://127.0.0.1:{free_port()}"
    runs = [
        ["kv", "put", "s/a", "v", "--explain"],
        ["kv", "put", "s/b", "-", "--explain", "-v", "-v"],
        ["kv", "get", "s/a", "--explain", "--json"],
        ["kv", "list", "s/", "--explain"],
        ["kv", "list", "s/", "--json"],
        ["kv", "put", "s/c", "v", "--dry-run"],
        ["kv", "put", "s/c", "v", "--dry-run", "--json"],
        ["kv", "delete", "s/a", "--dry-run", "--explain"],
        ["kv", "get", "s/missing", "--explain"],
        ["kv", "put", "bad key", "v"],
        ["kv", "get", "s/a", "--consul-addr", unreachable, "--explain"],
        ["kv", "delete", "s/a", "--explain", "--json"],
    ]
    outputs = []
    for i, args in enumerate(runs):
        # Every command with --token after it; some with --token first, from the env, and a refused token.
        variants = ["flag"] + (["flag-first", "env", "wrong"] if i % 3 == 0 else [])
        for how in variants:
            if how == "flag":
                proc = foundation([*args, "--token", token], env=env, input=b"stdin value")
            elif how == "flag-first":
                proc = foundation(["--token", token, *args], env=env, input=b"stdin value")
            elif how == "env":
                proc = foundation(args, env={**env, "CONSUL_HTTP_TOKEN": token}, input=b"stdin value")
            else:
                proc = foundation([*args, "--token", wrong], env=env, input=b"stdin value")
            assert b"Traceback" not in proc.stderr + proc.stdout, args
            outputs.append((args, how, proc.stdout + proc.stderr))
    for args, how, out in outputs:
        assert token.encode() not in out, (args, how)
        assert wrong.encode() not in out, (args, how)
    # The explain lines show the header with the variable instead.
    assert any(b'"X-Consul-Token: $CONSUL_HTTP_TOKEN"' in out for _, _, out in outputs)


def test_dry_run_script_with_token_replays_via_the_env_variable(consul_agent_acl):
    agent = consul_agent_acl
    dry = foundation(["kv", "put", "t/k", "v", "--dry-run", "--token", agent.token], env=agent.env)
    assert dry.returncode == 0, dry.stderr
    assert agent.token not in dry.stdout
    assert bash(dry.stdout, env=agent.env).returncode != 0, "script must refuse to run without CONSUL_HTTP_TOKEN"
    replay = bash(dry.stdout, env={**agent.env, "CONSUL_HTTP_TOKEN": agent.token})
    assert replay.returncode == 0, replay.stderr
    assert agent.kv_get(PREFIX + "t/k") == b"v"


def test_explain_curl_line_is_copy_pasteable(consul_agent):
    proc = foundation(["kv", "put", "paste/me", "a b", "--explain"], env=consul_agent.env)
    line = next(line[2:] for line in proc.stderr.splitlines() if line.startswith("$ curl"))
    argv = shlex.split(line)
    assert argv[0] == "curl" and argv[argv.index("--data-binary") + 1] == "a b"
