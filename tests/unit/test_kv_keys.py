"""KV key validation (facades/kv.py validate_key): untrusted input, so a property test plus the CLI edge."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_cli.errors import ExitStatus, UsageError
from foundation_cli.facades.kv import MAX_KEY_LENGTH, validate_key

# Text with lone surrogates: what Python makes of non-UTF-8 argv bytes (surrogateescape).
_keys = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(blacklist_categories=())),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.lists(st.sampled_from(["a", "b/", "/", ".", "..", "é", "\udcff", " ", "\x00"]), max_size=12).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(key=_keys, allow_empty=st.booleans())
def test_validate_key_accepts_or_raises_usage_error(key: str, allow_empty: bool) -> None:
    try:
        result = validate_key(key, allow_empty=allow_empty)
    except UsageError as exc:
        assert "\n" not in exc.message  # one line
        return
    assert result == key
    if not key:
        assert allow_empty
        return
    encoded = key.encode("utf-8")  # accepted keys are valid UTF-8 ...
    assert len(encoded) <= MAX_KEY_LENGTH
    assert not key.startswith("/") and "//" not in key
    assert not any(seg in (".", "..") for seg in key.split("/"))
    assert not any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key)


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"app/\xc3", b"ok/\xed\xa0\x80"])
def test_non_utf8_key_is_a_usage_error(raw: bytes) -> None:
    with pytest.raises(UsageError, match="not valid UTF-8"):
        validate_key(raw.decode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("argv", [["kv", "get"], ["kv", "put", "-", "v"], ["kv", "delete"], ["kv", "list"]])
def test_cli_non_utf8_key_one_line_exit_2(argv: list[str], tmp_path) -> None:
    """No Consul needed: the key is refused before any request (127.0.0.1:9 would refuse anyway)."""
    args = [a.encode() for a in argv]
    if argv[1] == "put":
        args[2] = b"bad\xffkey"
    else:
        args.append(b"bad\xffkey")
    env = {**os.environ, "CONSUL_HTTP_ADDR": "http://127.0.0.1:9", "LC_ALL": "C.UTF-8", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable.encode(), b"-m", b"foundation_cli", *args],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == int(ExitStatus.USAGE), err
    assert err.startswith("error: invalid key") and "not valid UTF-8" in err, err
    assert "internal error" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # error line + hint line
