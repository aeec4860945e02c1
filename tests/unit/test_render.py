"""The one renderer: curl lines and consul CLI equivalents that replay byte for byte."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.render import consul_cli, curl, printf_bytes, script

BASE = "http://127.0.0.1:8500"


def http(method: str, path: str, body: bytes | None = None, token: bool = False) -> RawOperation:
    return RawOperation(kind="consul-http", method=method, url=BASE + path, body=body, token_used=token)


def bash_out(cmd: str) -> bytes:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, check=True, timeout=10).stdout


def test_get_is_a_plain_curl_line():
    assert curl(http("GET", "/v1/kv/foundation/kv/a/b")) == f"curl -sS --fail-with-body {BASE}/v1/kv/foundation/kv/a/b"


def test_put_text_body_is_quoted_for_the_shell():
    line = curl(http("PUT", "/v1/kv/k", b"it's $HOME `x`"))
    argv = shlex.split(line)
    assert argv[argv.index("--data-binary") + 1] == "it's $HOME `x`"
    assert "-X PUT" in line


def test_token_is_a_variable_never_the_value():
    line = curl(http("PUT", "/v1/kv/k?token=abcd-secret", b"v", token=True))
    assert '-H "X-Consul-Token: $CONSUL_HTTP_TOKEN"' in line
    assert "abcd-secret" not in line and "token=" not in line


def test_query_parameters_are_kept():
    line = curl(http("GET", "/v1/kv/foundation/?recurse=&dc=dc1"))
    assert "recurse=" in line and "dc=dc1" in line


@pytest.mark.parametrize(
    "body",
    [
        b"@/etc/passwd",  # curl would read a file
        b"a\x00b",  # NUL cannot live in a bash word
        bytes(range(256)),  # every byte value
        b"\xff\xfe not utf-8 %s %d \\n '",
        b"100% done\n",
    ],
)
def test_bodies_replay_byte_for_byte(body):
    line = curl(http("PUT", "/v1/kv/k", body))
    if body.startswith(b"@") or b"\x00" in body or not _utf8(body):
        prefix, _, rest = line.partition(" | ")
        assert rest.endswith("--data-binary @-")
        assert bash_out(prefix) == body
    else:
        argv = shlex.split(line)
        assert argv[argv.index("--data-binary") + 1].encode() == body
    assert bash_out(printf_bytes(body)) == body


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("PUT", "/v1/kv/foundation/kv/a/b", b"hello", "consul kv put foundation/kv/a/b hello"),
        ("PUT", "/v1/kv/x?cas=7", b"v", "consul kv put -cas -modify-index=7 x v"),
        ("PUT", "/v1/kv/x?flags=42", b"v", "consul kv put -flags=42 x v"),
        ("GET", "/v1/kv/x", None, "consul kv get -detailed x"),
        ("GET", "/v1/kv/x?recurse=", None, "consul kv get -recurse x"),
        ("GET", "/v1/kv/x?keys=&separator=/", None, "consul kv get -keys -separator=/ x"),
        ("DELETE", "/v1/kv/x", None, "consul kv delete x"),
        ("DELETE", "/v1/kv/x?recurse=", None, "consul kv delete -recurse x"),
        ("PUT", "/v1/event/fire/foundation:ch", b"hi", "consul event -name=foundation:ch hi"),
        ("GET", "/v1/agent/members", None, "consul members -detailed"),
        ("GET", "/v1/operator/raft/configuration", None, "consul operator raft list-peers"),
        ("PUT", "/v1/agent/leave", None, "consul leave"),
    ],
)
def test_consul_cli_mapping(method, path, body, expected):
    assert consul_cli(http(method, path, body)) == expected


def test_consul_cli_binary_and_dash_values_go_through_stdin():
    for body in (b"-v", b"@file", b"\x00\x01"):
        line = consul_cli(http("PUT", "/v1/kv/k", body))
        printf, _, rest = line.partition(" | ")
        assert rest == "consul kv put k -"
        assert bash_out(printf) == body


def test_no_cli_equivalent_is_none():
    assert consul_cli(http("GET", "/v1/status/leader")) is None
    assert consul_cli(RawOperation(kind="ssh-exec", host="h", command="true")) is None


def test_script_keeps_reads_as_comments_and_writes_as_commands():
    ops = [http("GET", "/v1/kv/a"), http("PUT", "/v1/kv/a", b"1", token=True)]
    ops[0].finish(status=404)
    text = script(ops, title="foundation kv put a 1", addr=BASE)
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert any(line.startswith("# read: curl") for line in lines)
    assert f"CONSUL_HTTP_ADDR=${{CONSUL_HTTP_ADDR:-{BASE}}}" in lines
    assert ': "${CONSUL_HTTP_TOKEN:?set CONSUL_HTTP_TOKEN}"' in lines
    writes = [line for line in lines if line.startswith("curl")]
    assert writes == [
        'curl -sS --fail-with-body -X PUT -H "X-Consul-Token: $CONSUL_HTTP_TOKEN" "${CONSUL_HTTP_ADDR}/v1/kv/a"'
        " --data-binary 1 >/dev/null"
    ]
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
