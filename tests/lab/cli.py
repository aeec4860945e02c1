"""Run the real ``foundation`` CLI in a subprocess, the way a user does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pinned_bundle(directory: str | os.PathLike) -> Path:
    """A copy of this checkout's agent bundle in ``directory``, for FOUNDATION_AGENT_BUNDLE: the package
    under test may be edited while a lab runs, and a newer bundle then replaces this one in the cache."""
    from foundation_cli.core import agent_bundle

    built = agent_bundle.build().path
    pinned = Path(directory) / built.name
    shutil.copy(built, pinned)
    return pinned


def cluster_env(root: str | os.PathLike, *, bundle: str | os.PathLike | None = None, **extra: str) -> dict[str, str]:
    """The environment of a ``foundation`` run for the cluster kept under ``root``: its own state and
    config dirs (never this machine's), no colour, none of this machine's CONSUL_* settings (the CLI
    would follow them), the pinned agent ``bundle`` when given, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(FOUNDATION_STATE_DIR=str(Path(root) / "state"), XDG_CONFIG_HOME=str(Path(root) / "xdg"), NO_COLOR="1")
    if bundle is not None:
        env["FOUNDATION_AGENT_BUNDLE"] = str(bundle)
    env.update(extra)
    return env


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
