"""The stop script's "does group $p still run" check: true for a live process, false for a zombie."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from foundation_cli.core.bootstrap import _GROUP_RUNNING


def _running(pgid: int) -> bool:
    check = subprocess.run(["sh", "-c", _GROUP_RUNNING], env={**os.environ, "p": str(pgid)}, timeout=10)
    return check.returncode == 0


def test_a_live_group_runs_and_its_zombie_does_not():
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)  # its own group, pgid = its pid
    try:
        assert _running(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        stat = Path(f"/proc/{child.pid}/stat")
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not _running(child.pid)  # exited, not yet reaped: `kill -0` would still say yes
        assert subprocess.run(["kill", "-0", "--", f"-{child.pid}"], capture_output=True).returncode == 0
    finally:
        child.kill()
        child.wait()
    assert not _running(child.pid)
