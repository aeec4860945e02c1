"""Secret masking: tokens, gossip keys and passwords never reach any output or log.

Whatever code learns a secret registers it here; every renderer and the log
handler pass text through :func:`mask`. Structural masking (the token header,
``?token=``) happens in the renderer too, so an unregistered token is still
hidden where it has a known place.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "****"
_lock = threading.Lock()
_secrets: set[str] = set()

# key = "..." / "encrypt": "..." style values in configs and command lines.
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (?P<key>["']?(?:encrypt|token|password|passwd|secret|agent_master|initial_management
        |x-consul-token|authorization)["']?\s*[:=]\s*(?:bearer\s+)?)
    (?P<q>\\?["']|)(?P<val>[^"'\s,}&\\]+)(?P=q)
    """
)
_TOKEN_PARAM = re.compile(r"(?i)([?&]token=)[^&\s'\"]+")


def register(secret: str | None) -> None:
    """Remember a secret so it is masked wherever it would be printed."""
    if secret and len(secret) >= 4:
        with _lock:
            _secrets.add(secret)


def mask(text: str) -> str:
    """Replace every registered secret and every secret-shaped field in ``text``."""
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _TOKEN_PARAM.sub(r"\1" + MASK, text)
    return _SECRET_FIELD.sub(
        lambda m: (
            m.group(0)
            if m.group("val") in (MASK, "$CONSUL_HTTP_TOKEN", '"$CONSUL_HTTP_TOKEN"')
            or m.group("val").startswith(("$", "-"))  # a variable or a flag name ("token: --token"), not a value
            else f"{m.group('key')}{m.group('q')}{MASK}{m.group('q')}"
        ),
        text,
    )


class MaskingFilter(logging.Filter):
    """Logging filter that masks secrets in every record (installed on Foundation's handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        return True
