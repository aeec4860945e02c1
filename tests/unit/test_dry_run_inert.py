"""Dry-run scripts are inert against any value (issue 12): hostile keys, values, argv, hosts and uploads.

Each generated script is checked with ``bash -n`` and then run for real by bash with ``curl`` and
``ssh`` replaced by recording functions: no injected command runs (a sentinel file stays absent)
and every request carries exactly the bytes it was planned with -- secrets included, supplied as
the ``FOUNDATION_SECRET_N`` variables the script asks for and never written into the script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from foundation_cli.raw import render
from foundation_cli.raw.operation import RawOperation

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# Ways out of a comment, a quoted word, a heredoc or a double-quoted URL; {s} is the sentinel path.
BREAKOUTS = [
    "\ntouch {s} #",
    "'\ntouch {s}\n'",
    '"; touch {s}; "',
    "$(touch {s})",
    "`touch {s}`",
    "\nFOUNDATION_EOF\ntouch {s}\n",
    "\r\ntouch {s}\n",
    "\\\ntouch {s}\n",
    "${{IFS}}$(touch${{IFS}}{s})",
    "password=hunter2-$(touch {s})",
    "token: 'abc$(touch {s})'",
    "-----BEGIN RSA PRIVATE KEY-----\n$(touch {s})\n-----END RSA PRIVATE KEY-----",
    "*",
    "!!",
]

# curl/ssh stand-ins: each call appends its argv (NUL-separated) and its stdin to numbered files.
STUBS = r"""
_rec() { local n; n=$(cat "$REC/n" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > "$REC/n";
  : > "$REC/$n.argv"; for a in "$@"; do printf '%s\0' "$a" >> "$REC/$n.argv"; done;
  if [ "$1" = ssh ] || [[ " $* " == *" @- "* ]]; then cat > "$REC/$n.stdin"; fi; }
curl() { _rec curl "$@"; printf true; }
ssh() { _rec ssh "$@"; }
export -f _rec curl ssh
"""


def _run(script: str, tmp: Path, env: dict[str, str]) -> list[tuple[list[bytes], bytes | None]]:
    path = tmp / "s.sh"
    path.write_text(script, encoding="utf-8")
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check.stderr + "\n" + script
    rec = tmp / "rec"
    shutil.rmtree(rec, ignore_errors=True)
    rec.mkdir()
    full_env = {"PATH": os.environ["PATH"], "REC": str(rec), "CONSUL_HTTP_TOKEN": "t", **env}
    proc = subprocess.run(
        ["bash", "-c", STUBS + f"\nbash {path} </dev/null"], capture_output=True, env=full_env, cwd=tmp, timeout=20
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace") + "\n" + script
    calls = []
    count = int((rec / "n").read_text()) if (rec / "n").exists() else 0
    for n in range(1, count + 1):
        argv = (rec / f"{n}.argv").read_bytes().split(b"\0")[:-1]
        stdin = (rec / f"{n}.stdin").read_bytes() if (rec / f"{n}.stdin").exists() else None
        calls.append((argv, stdin))
    return calls


def _secrets_env(refs: render.SecretRefs) -> dict[str, str]:
    return {name: secret for secret, name in refs.names.items()}


def _put(key: str, value: bytes, **params: str) -> RawOperation:
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    url = "http://127.0.0.1:8500/v1/kv/" + urllib.parse.quote(f"foundation/kv/{key}") + query
    return RawOperation(kind="consul-http", method="PUT", url=url, body=value, token_used=True, dry_run=True)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_hostile = st.builds(lambda pre, breakout, post: pre + breakout + post, _text, st.sampled_from(BREAKOUTS), _text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=_hostile.filter(lambda k: "\x00" not in k),
    value=st.one_of(_hostile.map(lambda v: v.encode("utf-8")), st.binary(max_size=64)),
    cas=st.booleans(),
)
@example(key="k", value=b"-\x80", cas=False)  # a binary value starting with '-' (printf took it for an option)
def test_kv_put_script_is_inert_and_exact(tmp_path, key, value, cas):
    sentinel = tmp_path / "PWNED"
    key = key.replace("{s}", str(sentinel))
    value = value.replace(b"{s}", str(sentinel).encode())
    op = _put(key.format(s=sentinel) if "{s}" in key else key, value, **({"cas": "7"} if cas else {}))
    refs = render.SecretRefs()
    title = f"foundation kv put {key} {value.decode('utf-8', 'replace')} --dry-run"
    text = render.script([op], title=title, refs=refs)
    for secret in refs.names:
        assert secret not in text
    calls = _run(text, tmp_path, _secrets_env(refs))
    assert not sentinel.exists(), text
    assert len(calls) == 1
    argv, stdin = calls[0]
    url = next(a for a in argv if a.startswith(b"http://127.0.0.1:8500/"))
    assert url.decode() == op.url
    if b"--data-binary" not in argv:
        sent = b""
    else:
        sent = stdin if b"@-" in argv else argv[argv.index(b"--data-binary") + 1]
    assert sent == value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    host=_hostile.filter(lambda h: "\x00" not in h),
    command=_hostile.filter(lambda c: "\x00" not in c),
    path=_hostile.filter(lambda p: "\x00" not in p),
    content=_hostile,
    argv=st.lists(_hostile.filter(lambda a: "\x00" not in a), min_size=1, max_size=3),
)
def test_ssh_upload_and_local_process_scripts_are_inert(tmp_path, host, command, path, content, argv):
    sentinel = tmp_path / "PWNED"
    fill = lambda t: t.replace("{s}", str(sentinel))  # noqa: E731
    host, command, path, content = fill(host), fill(command), "/etc/" + fill(path), fill(content)
    ops = [
        RawOperation(kind="ssh-exec", host=host, user="root", port=2222, command=command, stdin_desc=fill("x\ny")),
        RawOperation(kind="ssh-upload", host=host, user="root", path=path, content=content.encode(), mode=0o600),
        RawOperation(kind="local-process", argv=["true", *[fill(a) for a in argv]]),
        RawOperation(kind="mdns", method="ANNOUNCE", command=fill(command)),
    ]
    refs = render.SecretRefs()
    text = render.script(ops, title=fill(command), refs=refs)
    calls = _run(text, tmp_path, _secrets_env(refs))
    assert not sentinel.exists(), text
    (exec_argv, _), (up_argv, up_stdin) = calls
    assert exec_argv == [b"ssh", b"-p", b"2222", f"root@{host}".encode(), command.encode()]
    assert up_argv[:2] == [b"ssh", f"root@{host}".encode()]
    assert up_argv[2].decode() == render.upload_command(path, 0o600, len(content.encode()))
    assert up_stdin == content.encode()


def test_the_issue_example_is_inert(tmp_path):
    sentinel = tmp_path / "PWNED"
    value = f"x\ntouch {sentinel} #".encode()
    text = render.script([_put("app/k", value)], title=f"foundation kv put app/k {value.decode()} --dry-run")
    assert "\ntouch" not in text.replace("\n# touch", "").replace(f"'x\ntouch {sentinel} #'", "")
    _run(text, tmp_path, {})
    assert not sentinel.exists()


def test_masked_values_become_variables_not_stars(tmp_path):
    value = b"user=admin password=hunter2-S3cret *"
    refs = render.SecretRefs()
    text = render.script([_put("app/db", value)], title="t", refs=refs)
    assert "hunter2-S3cret" not in text and "****" not in text.split("# consul:")[1].split("\n", 1)[1]
    assert ': "${FOUNDATION_SECRET_1:?set FOUNDATION_SECRET_1' in text
    assert refs.names == {"hunter2-S3cret": "FOUNDATION_SECRET_1"}
    ((argv, _),) = _run(text, tmp_path, {"FOUNDATION_SECRET_1": "hunter2-S3cret"})
    assert argv[argv.index(b"--data-binary") + 1] == value
    # Without the variable the script stops before sending anything, saying what to set.
    env = {"PATH": os.environ["PATH"], "CONSUL_HTTP_TOKEN": "t"}
    proc = subprocess.run(["bash", str(tmp_path / "s.sh")], capture_output=True, text=True, timeout=10, env=env)
    assert proc.returncode != 0 and "set FOUNDATION_SECRET_1" in proc.stderr


def test_registered_secret_in_an_upload_is_a_variable_and_the_host_gets_the_bytes(tmp_path):
    from foundation_cli.raw import secrets

    token = "0f0e0d0c-h4-upload-token-5555"
    secrets.register(token)
    content = f'acl {{ tokens {{ agent = "{token}" }} }}\nprice = "$5 `x` \\n"\n'.encode()
    op = RawOperation(
        kind="ssh-upload", host="h", user="root", path="/etc/consul.d/acl.hcl", content=content, mode=0o640
    )
    refs = render.SecretRefs()
    text = render.script([op], title="t", refs=refs)
    assert token not in text
    ((argv, stdin),) = _run(text, tmp_path, _secrets_env(refs))
    assert stdin == content


def test_comment_prefixes_every_line():
    assert render.comment("a\nb\n\x1b[2Jc") == "# a\n# b\n# \\x1b[2Jc"


def test_explain_keeps_the_consul_equivalent_a_comment_and_plays_no_escape():
    op = _put("app/k", b"x\ntouch /tmp/PWNED #\x1b]0;t\x07")
    block = render.explain_block(op)
    assert "\x1b" not in block and "\x07" not in block
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("# consul:"))
    end = next(i for i, line in enumerate(lines) if line.strip().startswith("↳"))
    assert all(line.strip().startswith("#") for line in lines[start:end])


def test_a_secret_is_typed_without_echo_when_the_script_runs_on_a_terminal(tmp_path):
    import pty

    value = b"password=typed-S3cret"
    refs = render.SecretRefs()
    text = render.script([_put("app/db", value)], title="t", refs=refs)
    (tmp_path / "s.sh").write_text(text)
    rec = tmp_path / "rec"
    rec.mkdir()
    master, slave = pty.openpty()
    env = {"PATH": os.environ["PATH"], "REC": str(rec), "CONSUL_HTTP_TOKEN": "t"}
    proc = subprocess.Popen(
        ["bash", "-c", STUBS + f"\nbash {tmp_path / 's.sh'}"], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    seen = b""
    try:
        while b"of this script): " not in seen:  # type only once the prompt is there (echo is off then)
            chunk = os.read(master, 1024)
            assert chunk, seen
            seen += chunk
        os.write(master, b"typed-S3cret\n")
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.wait(timeout=20) == 0, seen
    assert b"FOUNDATION_SECRET_1 (secret 1 of this script):" in seen and b"typed-S3cret" not in seen  # no echo
    argv = (rec / "1.argv").read_bytes().split(b"\0")[:-1]
    assert argv[argv.index(b"--data-binary") + 1] == value
