"""Durations as people and Consul write them (``500ms``, ``30s``, ``5m``, ``1h30m``, ``2d``).

One parser so every command and agent setting accepts the same spellings;
:func:`parse_positive` is the CLI's (a bare number of seconds too, and never 0 or less).
"""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def is_duration(text: str) -> bool:
    """Whether ``text`` is a duration like ``30s`` or ``1h30m`` (a bare number is not)."""
    return bool(_WHOLE.match(text.strip()))


def parse(text: str) -> float:
    """Seconds in ``text``; :class:`ValueError` naming the accepted forms otherwise."""
    raw = text.strip()
    if not _WHOLE.match(raw):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 500ms, 30s, 5m, 1h30m, 2d")
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(raw))


def parse_positive(text: str) -> float:
    """Seconds in ``text`` — a duration (``30s``, ``2m``) or a bare number of seconds — strictly above 0.

    :class:`ValueError` naming the accepted forms for anything else: ``-5``, ``0``, ``nan``, ``inf``,
    ``1e999``, empty text.
    """
    import math

    raw = str(text).strip()
    try:
        value = float(raw) if not _WHOLE.match(raw) else parse(raw)
    except ValueError:
        value = parse(raw)  # raises naming the accepted forms
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"invalid duration {text!r}: must be more than 0 (e.g. 500ms, 30s, 5m or plain seconds)")
    return value


def format(seconds: float) -> str:  # noqa: A001 - mirrors parse()
    """A short spelling of ``seconds`` that :func:`parse` reads back (``1.5s``, ``5m``, ``2h``)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
