"""Secret masking: tokens, gossip keys and passwords never reach any output or log.

Whatever code learns a secret registers it here; every renderer and the log
handler pass text through :func:`mask`. Secrets that were never registered are
still found where they have a known shape (:func:`spans`):

- ``key = "…"`` / ``"key": "…"`` / ``key: …`` / ``key=…`` for token, password,
  secret, encrypt, agent_master, initial_management, Authorization, X-Consul-Token;
- every value inside an ``acl { tokens { … } }`` block (HCL), ``"tokens": {…}``
  (JSON), a YAML ``tokens:`` mapping, or ``tokens.NAME = …`` dotted keys;
- ``?token=`` / ``&token=`` query parameters, the name percent-encoded or not (``?%74oken=``);
- ``-token VALUE`` / ``-token=VALUE`` (also ``--token``, ``-http-token``, ``-encrypt``,
  ``consul keyring -install|-use|-remove KEY``);
- the password in ``scheme://user:password@host``;
- PEM private keys (``-----BEGIN … PRIVATE KEY-----`` to its END line, or to the end of
  the text when cut off).

:func:`spans` also serves the dry-run script, which replaces each secret with a
``${FOUNDATION_SECRET_N}`` reference instead of ``****`` (so replaying it stores the
real value without printing it).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

MASK = "****"
_lock = threading.Lock()
_secrets: set[str] = set()


class _Pattern:
    """A regular expression compiled on first use: most commands print nothing secret-shaped."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)


# Every shape below contains one of these (a percent-encoded ?token= contains "%"): text without any
# of them is only searched for registered secrets. Same case rules as the shapes (re's IGNORECASE).
_TRIGGER = _Pattern(
    r"(?i)encrypt|token|passw|secret|agent_master|initial_management|authorization"
    r"|-install|-use|-remove|://|private key|%"
)

# key = "..." / "encrypt": "..." style values in configs and command lines.
_SECRET_FIELD = _Pattern(
    r"""(?ix)
    (?P<key>["']?(?:encrypt|token|password|passwd|secret|agent_master|initial_management
        |x-consul-token|authorization)["']?\s*[:=]\s*(?:bearer\s+)?)
    (?P<q>\\?["']|)(?P<val>[^"'\s,}&\\{\[][^"'\s,}&\\]*)(?P=q)
    """
)  # a value never starts with { or [: "auto_encrypt": {…} is a block, not a secret
# ?token= with the parameter name percent-encoded in any letter (?%74oken=, ?TOK%45N=).
_TOKEN_PARAM = _Pattern(r"(?i)[?&](?:t|%[57]4)(?:o|%[46]f)(?:k|%[46]b)(?:e|%[46]5)(?:n|%[46]e)=(?P<val>[^&\s'\"#]+)")
# -token VALUE / -token=VALUE / --token "VALUE"; keyring -install KEY; -encrypt KEY.
_FLAG = _Pattern(
    r"""(?ix)(?<![\w-])
    (?:--?(?:token|http-token|acl-token|agent-token|encrypt|password|secret)|-(?:install|use|remove))
    (?P<sep>=|[ \t]+)
    (?:"(?P<dq>[^"\n]*)"|'(?P<sq>[^'\n]*)'|(?P<val>[^\s'"]+))
    """
)
# Bounded repeats: an unbounded scheme or user part made masking quadratic ("a.a.a…" took minutes).
_URL_PASSWORD = _Pattern(r"(?i)\b[a-z][a-z0-9+.-]{0,31}://[^/\s:@]{0,256}:(?P<val>[^@\s]{1,512})@(?=[\w\[])")
_PEM = _Pattern(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*)PRIVATE KEY-----(?P<val>.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.S,
)
# acl tokens blocks: JSON/HCL braces, YAML indentation, dotted keys.
_TOKENS_BRACES = _Pattern(r"""(?i)["']?\btokens["']?\s*[:=]?\s*\{(?P<body>[^{}]*)\}""")
_TOKENS_YAML = _Pattern(
    r"(?im)^(?P<indent>[ \t]*)[\"']?tokens[\"']?[ \t]*:[ \t]*(?:#.*)?\n(?P<body>(?:(?P=indent)[ \t]+.*(?:\n|\Z)|[ \t]*\n)*)"
)
_TOKENS_DOTTED = _Pattern(
    r"""(?i)\btokens\.[\w-]+["']?\s*[:=]\s*(?:"(?P<dq>[^"\n]*)"|'(?P<sq>[^'\n]*)'|(?P<val>[^\s,}'"]+))"""
)
# Values inside a tokens block: "name": "value", name = "value", name: value.
_BLOCK_VALUE = _Pattern(
    r"""(?im)["']?[\w-]+["']?[ \t]*[:=][ \t]*(?:\\?"(?P<dq>[^"\\\n]*)\\?"|'(?P<sq>[^'\n]*)'|(?P<val>[^\s,}'"#][^\s,}'"]*))"""
)

_YAML_VALUE = _Pattern(
    r"""(?m)^[ \t]*(?:-[ \t]+)?["']?[\w-]+["']?[ \t]*:[ \t]*(?:"(?P<dq>[^"\n]*)"|'(?P<sq>[^'\n]*)'|(?P<val>[^\s#][^\n]*?))[ \t]*(?:[ \t]#.*)?$"""
)

_NOT_A_VALUE = (MASK, "$CONSUL_HTTP_TOKEN", '"$CONSUL_HTTP_TOKEN"')


def register(secret: str | None) -> None:
    """Remember a secret so it is masked wherever it would be printed."""
    if secret and len(secret) >= 4:
        with _lock:
            _secrets.add(secret)


def registered() -> list[str]:
    """The registered secrets, longest first."""
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def _is_value(val: str) -> bool:
    # A variable, a flag name ("token: --token"), or an already masked value is not a secret.
    return bool(val) and val not in _NOT_A_VALUE and not val.startswith(("$", "-")) and MASK not in val


def _group_span(m: re.Match) -> tuple[int, int] | None:
    for name in ("dq", "sq", "val"):
        if name in m.re.groupindex and m.group(name) is not None:
            return (m.start(name), m.end(name)) if _is_value(m.group(name)) else None
    return None


def spans(text: str) -> list[tuple[int, int]]:
    """Where the secrets in ``text`` are: sorted, non-overlapping ``(start, end)`` pairs."""
    if not text:
        return []
    found: list[tuple[int, int]] = []
    for secret in registered():
        start = text.find(secret)
        while start >= 0:
            found.append((start, start + len(secret)))
            start = text.find(secret, start + len(secret))
    if _TRIGGER.search(text) is None:
        return _merge(found)
    for m in _SECRET_FIELD.finditer(text):
        if _is_value(m.group("val")):
            found.append((m.start("val"), m.end("val")))
    for pattern in (_TOKEN_PARAM, _FLAG, _URL_PASSWORD, _TOKENS_DOTTED):
        for m in pattern.finditer(text):
            if pattern is _FLAG and m.group("sep") != "=" and re.fullmatch(r"[a-z]+[.,:;]?", m.group(0).split()[-1]):
                continue  # prose ("--token or CONSUL_HTTP_TOKEN"), not a value
            span = _group_span(m)
            if span and span[0] < span[1]:
                found.append(span)
    for m in _PEM.finditer(text):
        if m.group("val").strip():
            found.append((m.start("val"), m.end("val")))
    for pattern, values in ((_TOKENS_BRACES, _BLOCK_VALUE), (_TOKENS_YAML, _YAML_VALUE)):
        for block in pattern.finditer(text):
            offset = block.start("body")
            for m in values.finditer(block.group("body")):
                span = _group_span(m)
                if span and span[0] < span[1]:
                    found.append((offset + span[0], offset + span[1]))
    return _merge(found)


def _merge(found: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def mask(text: str) -> str:
    """Replace every registered secret and every secret-shaped value in ``text`` with ``****``."""
    if not text:
        return text
    out = []
    last = 0
    for start, end in spans(text):
        out.append(text[last:start])
        out.append(MASK)
        last = end
    out.append(text[last:])
    return "".join(out)


_SECRET_KEYS = _Pattern(
    r"(?i)^(?:encrypt|token|.*_token|password|passwd|secret|agent_master|initial_management|master|private_key)$"
)


def redact(data: Any, *, _under_tokens: bool = False) -> Any:
    """A copy of ``data`` (dicts/lists from YAML/JSON) with every secret value replaced by ``****``.

    Every value under a ``tokens`` mapping (``acl.tokens.*``) and under secret-named keys is
    replaced, whatever it looks like; strings elsewhere still pass :func:`mask`.
    """
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            secret_key = _under_tokens or (isinstance(key, str) and _SECRET_KEYS.match(key) is not None)
            if secret_key and value not in (None, "", {}, []) and not isinstance(value, (dict, list, bool)):
                out[key] = MASK
            else:
                out[key] = redact(
                    value, _under_tokens=_under_tokens or (isinstance(key, str) and key.lower() == "tokens")
                )
        return out
    if isinstance(data, list):
        return [redact(v, _under_tokens=_under_tokens) for v in data]
    if isinstance(data, str):
        return MASK if _under_tokens and data else mask(data)
    return data


class MaskingFilter(logging.Filter):
    """Logging filter that masks secrets in every record (installed on Foundation's handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        return True
