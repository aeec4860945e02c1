"""Untrusted text made safe for a terminal.

Output of remote commands, service logs and values read from Consul can carry
escape sequences that move the cursor, retitle the window or hide what
follows. Everything such a source says goes through :func:`printable` before
it is written to a terminal.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and the C1 range (8-bit CSI and friends).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character (but tab and newline) shown as a ``\\xNN`` escape."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_JSON_UNSAFE = re.compile(r"[\x7f-\x9f]")


def json_printable(text: str) -> str:
    r"""JSON text with DEL and the C1 controls (8-bit CSI …) as ``\u00NN`` escapes.

    ``json.dumps(..., ensure_ascii=False)`` escapes C0 controls but writes DEL and C1 as they
    are; those characters only occur inside JSON strings, where the escape means the same.
    """
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
