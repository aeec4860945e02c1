"""`foundation consul ARGS…` passes every argument to the real consul CLI untouched.

Each command line below (the ones the docs show, and the ones that used to break: `-recurse`,
`-cas`, `-policy-name`, `keyring -remove`, `-cleanup-dead-servers=true`, `-http-addr`, `--help`)
runs twice against the same real Consul agent, from the same starting state: once as
``foundation --consul-addr ADDR consul ARGS…`` and once as ``consul ARGS…`` with
``CONSUL_HTTP_ADDR=ADDR``. Stdout and the exit status must be the same (after masking what
differs between any two runs: raft indexes, event IDs, generated keys).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.lab.consul import ConsulAgent

pytestmark = pytest.mark.timeout(300)

P = "hatch/"  # every key these cases touch lives under this prefix; reset before each run

# (id, setup: consul argv lists run before each side, args after `consul`, volatile output?)
CASES: list[tuple[str, list[list[str]], list[str], bool]] = [
    ("members", [], ["members"], False),
    ("members-http-addr", [], ["members", "-http-addr={addr}"], False),
    ("http-addr-first", [], ["members", "-http-addr", "{addr}", "-detailed"], False),
    ("info", [], ["info"], True),
    ("raft-list-peers", [], ["operator", "raft", "list-peers"], False),
    ("autopilot-get", [], ["operator", "autopilot", "get-config"], False),
    ("autopilot-set", [], ["operator", "autopilot", "set-config", "-cleanup-dead-servers=true"], False),
    ("catalog-services", [], ["catalog", "services"], False),
    ("catalog-nodes", [], ["catalog", "nodes"], False),
    ("kv-put", [], ["kv", "put", P + "app/mode", "blue"], False),
    ("kv-put-flags", [], ["kv", "put", "-flags=42", P + "f", "v"], False),
    ("kv-put-cas-absent", [], ["kv", "put", "-cas", "-modify-index=0", P + "c", "v"], False),
    (
        "kv-put-cas-present",  # the case that silently overwrote: -cas must make it fail
        [["kv", "put", P + "c", "old"]],
        ["kv", "put", "-cas", "-modify-index=0", P + "c", "new"],
        False,
    ),
    ("kv-get-detailed", [["kv", "put", P + "d", "x"]], ["kv", "get", "-detailed", P + "d"], False),
    (
        "kv-get-recurse",  # `-c` used to eat a letter: flag provided but not defined: -re
        [["kv", "put", P + "a/1", "one"], ["kv", "put", P + "a/2", "two"]],
        ["kv", "get", "-recurse", P + "a"],
        False,
    ),
    ("kv-get-keys", [["kv", "put", P + "k/x/y", "1"]], ["kv", "get", "-keys", "-separator=/", P + "k/"], False),
    ("kv-get-missing", [], ["kv", "get", P + "nope"], False),
    ("kv-delete-recurse", [["kv", "put", P + "r/1", "1"]], ["kv", "delete", "-recurse", P + "r"], False),
    ("event", [], ["event", "-name=foundation:deploys", "hi"], False),
    ("lock", [], ["lock", "-timeout=10s", P + "locks/x", "true"], False),
    ("keyring-list", [], ["keyring", "-list"], False),
    ("keyring-remove", [], ["keyring", "-remove", "aGVsbG8gd29ybGQgMTIzNA=="], False),
    ("acl-policy-name", [], ["acl", "token", "create", "-policy-name=global-management"], False),
    ("acl-bootstrap", [], ["acl", "bootstrap"], False),
    ("force-leave-unknown", [], ["force-leave", "no-such-node"], False),
    ("reload", [], ["reload"], False),
    ("keygen", [], ["keygen"], True),
    ("version", [], ["version"], False),
    ("help", [], ["--help"], False),
    ("kv-help", [], ["kv", "get", "--help"], False),
    ("h-flag", [], ["-h"], False),
    ("unknown-flag", [], ["kv", "get", "-no-such-flag", "x"], False),
    ("tls-ca-create", [], ["tls", "ca", "create"], False),
    # More lines as the docs show them (docs/*.md, README.md):
    ("doc-kv-put", [], ["kv", "put", P + "foundation/kv/app/mode", "blue"], False),
    ("doc-event-space", [], ["event", "-name", "foundation:deploys", "hi"], False),
    ("doc-watch-event", [], ["watch", "-type=event"], False),
    ("doc-kv-get-recurse-prefix", [["kv", "put", P + "z", "1"]], ["kv", "get", "-recurse", P], False),
    ("doc-keyring-install", [], ["keyring", "-install", "aGVsbG8gd29ybGQgMTIzNA=="], False),
    ("doc-acl-policy-create", [], ["acl", "policy", "create", "-name=x", '-rules=key_prefix "" {{}}'], False),
    ("doc-join", [], ["join", "127.0.0.1:1"], False),
]

_VOLATILE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"(?m)^((?:Create|Modify|Lock)Index\s+)\d+"), r"\1N"),
]


def _normal(text: str, volatile: bool) -> str:
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    if volatile:  # changing figures (info's stats, a generated key): compare the shape only
        text = re.sub(r"(?m)^[A-Za-z0-9+/]{20,}=*$", "<key>", text)
        text = re.sub(r"(?m)=.*$", "=…", text)
    return text


def _reset(agent: ConsulAgent, setup: list[list[str]]) -> None:
    env = {**os.environ, "CONSUL_HTTP_ADDR": agent.http_addr}
    subprocess.run(["consul", "kv", "delete", "-recurse", P], env=env, check=True, capture_output=True, timeout=30)
    for argv in setup:
        subprocess.run(["consul", *argv], env=env, check=True, capture_output=True, timeout=30)


def _run(argv: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_foundation_consul_equals_consul(case, consul_agent: ConsulAgent, tmp_path) -> None:
    name, setup, args, volatile = case
    args = [a.format(addr=consul_agent.http_addr) for a in args]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP_")}
    (tmp_path / "via").mkdir()
    (tmp_path / "direct").mkdir()

    _reset(consul_agent, setup)
    via = _run(
        [sys.executable, "-m", "foundation_cli", "--consul-addr", consul_agent.http_addr, "consul", *args],
        base_env,
        tmp_path / "via",
    )
    _reset(consul_agent, setup)
    direct = _run(["consul", *args], {**base_env, "CONSUL_HTTP_ADDR": consul_agent.http_addr}, tmp_path / "direct")

    assert via.returncode == direct.returncode, (via.stderr, direct.stderr)
    assert _normal(via.stdout, volatile) == _normal(direct.stdout, volatile)
    assert _normal(via.stderr, volatile) == _normal(direct.stderr, volatile)
    assert sorted(p.name for p in (tmp_path / "via").iterdir()) == sorted(
        p.name for p in (tmp_path / "direct").iterdir()
    )
    if name == "kv-put-cas-present":
        assert via.returncode != 0  # -cas reached consul: the existing key was not overwritten
        assert consul_agent.kv_get(P + "c") == b"old"


@pytest.mark.parametrize(
    "args",
    [
        ["kv", "get", "-recurse", "a"],
        ["kv", "put", "-cas", "-modify-index=0", "k", "v"],
        ["acl", "token", "create", "-policy-name=x"],
        ["keyring", "-remove", "KEY"],
        ["operator", "autopilot", "set-config", "-cleanup-dead-servers=true"],
        ["members", "-http-addr=http://127.0.0.1:1"],
        ["--help"],
        ["-c", "x", "--explain", "--json", "-v"],
        ["kv", "get", "--", "-x"],
    ],
)
def test_arguments_reach_consul_verbatim(args: list[str]) -> None:
    """What consul would be given, read from the dry run's record: every argument, in order."""
    proc = _run(
        [sys.executable, "-m", "foundation_cli", "--dry-run", "--json", "consul", *args],
        {**os.environ, "CONSUL_HTTP_ADDR": "http://127.0.0.1:1"},
        None,
    )
    assert proc.returncode == 0, proc.stderr
    ops = json.loads(proc.stdout)["operations"]
    assert [op["argv"] for op in ops] == [["consul", *args]]


def test_old_double_dash_spelling_still_works() -> None:
    proc = _run(
        [sys.executable, "-m", "foundation_cli", "--dry-run", "--json", "consul", "--", "kv", "get", "-recurse", "a"],
        {**os.environ, "CONSUL_HTTP_ADDR": "http://127.0.0.1:1"},
        None,
    )
    assert json.loads(proc.stdout)["operations"][0]["argv"] == ["consul", "kv", "get", "-recurse", "a"]


def test_consul_alone_shows_foundations_help() -> None:
    proc = _run([sys.executable, "-m", "foundation_cli", "consul"], {**os.environ, "COLUMNS": "100"}, None)
    assert proc.returncode == 0
    assert "verbatim" in proc.stdout and "Usage: foundation consul" in proc.stdout


def test_ssh_passes_arguments_after_the_node(tmp_path) -> None:
    """`foundation ssh NODE ARGS…`: ARGS (options included) follow the node untouched; -h first is our help."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(
        json.dumps({"mode": "ssh", "nodes": {"198.18.0.9": "n1"}, "hosts": ["198.18.0.9"], "ssh": {"user": "root"}})
    )
    env = {**os.environ, "FOUNDATION_STATE_DIR": str(state)}
    proc = _run(
        [sys.executable, "-m", "foundation_cli", "--dry-run", "--json", "ssh", "n1", "ls", "-la", "--help", "-c", "x"],
        env,
        None,
    )
    assert proc.returncode == 0, proc.stderr
    argv = json.loads(proc.stdout)["operations"][0]["argv"]
    assert argv[-6:] == ["root@198.18.0.9", "ls", "-la", "--help", "-c", "x"]
    helped = _run([sys.executable, "-m", "foundation_cli", "ssh", "--help"], {**os.environ, "COLUMNS": "100"}, None)
    assert helped.returncode == 0 and "Usage: foundation ssh NODE" in helped.stdout
