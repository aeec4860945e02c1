"""Run the real ``foundation`` CLI in a subprocess, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def foundation(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: bytes | str | None = None,
    timeout: float = 60,
    check: bool = False,
    cwd: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """``python -m foundation_cli ARGS`` in ``cwd`` (default: the checkout; a cluster's directory finds its
    foundation.yaml); text output unless ``input`` is bytes (then bytes)."""
    text = not isinstance(input, bytes)
    proc = subprocess.run(
        [sys.executable, "-m", "foundation_cli", *args],
        env=dict(os.environ if env is None else env),
        input=input,
        capture_output=True,
        text=text,
        timeout=timeout,
        cwd=ROOT if cwd is None else cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"foundation {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def bash(script: str, *, env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a script (e.g. a ``--dry-run`` output) with bash."""
    return subprocess.run(
        ["bash", "-c", script],
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
