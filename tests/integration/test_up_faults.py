"""`foundation up` / `down` under faults, over real SSH on a 5-host lab (one module-scoped lab, in order):

1. SSH auth refused on one host (its authorized key gone) and no consul on another: the other hosts
   finish, exit 7 naming the host; `--consul-binary` uploads consul to the host without one; with the
   key back, a re-run completes.
2. `down --purge` over SSH: nothing left running, Consul's data gone on every host.
3. `up` killed (SIGKILL) at several points of a fresh 5-host bootstrap, re-run each time: it converges,
   and at no point is there more than one consul or one agent on a host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.netns import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]


class Ctx:
    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab, self.root = lab, root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
        self.env.update(FOUNDATION_STATE_DIR=str(root / "state"), XDG_CONFIG_HOME=str(root / "xdg"), NO_COLOR="1")
        hosts = "".join(f"  - {h.ip}\n" for h in lab.hosts)
        (root / "foundation.yaml").write_text(
            f"hosts:\n{hosts}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
            f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
        )

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "foundation_cli", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the lab needs root")
    from foundation_cli.core import agent_bundle

    root = tmp_path_factory.mktemp("up-faults")
    pinned = root / agent_bundle.build().path.name  # the package may be edited while this runs
    shutil.copy(agent_bundle.build().path, pinned)
    lab = Lab(5)
    c = Ctx(lab, root)
    c.env["FOUNDATION_AGENT_BUNDLE"] = str(pinned)
    try:
        yield c
    finally:
        lab.close()


def processes(host) -> tuple[int, int]:
    """(consul agents, foundation agents) running on ``host`` (not counting their supervising shells)."""
    consul = agents = 0
    for pid in host.pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd.startswith(b"sh ") or cmd.startswith(b"env "):
            continue
        consul += b"consul agent" in cmd
        agents += b"-m foundation_cli.agent" in cmd
    return consul, agents


def test_auth_refused_on_one_host_others_finish_then_a_rerun_completes(ctx):
    refused, bare = ctx.lab.hosts[3], ctx.lab.hosts[4]
    keys = refused.path("/root/.ssh/authorized_keys")
    saved = keys.read_text()
    keys.write_text("")
    bare.exec("rm -f /usr/local/bin/consul")  # only in this host's overlay: it has no consul now
    try:
        proc = ctx.run("up", "--json", "--consul-binary", shutil.which("consul") or "/usr/local/bin/consul")
    finally:
        keys.write_text(saved)
    assert proc.returncode == 7, proc.stderr
    assert "Traceback" not in proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]  # in foundation.yaml's order
    assert hosts[3]["state"] == "failed", hosts[3]
    assert "auth" in (hosts[3]["error"] or "").lower(), hosts[3]
    assert [h["state"] != "failed" for h in hosts] == [True, True, True, False, True], hosts
    steps = {s["step"]: s for s in hosts[4]["steps"]}
    assert steps["consul binary"]["state"] == "uploaded", steps["consul binary"]
    assert f"1 of 5 hosts failed: {refused.ip}" in proc.stderr

    again = ctx.run("up", "--json")
    assert again.returncode == 0, again.stderr
    assert all(processes(h) == (1, 1) for h in ctx.lab.hosts), [processes(h) for h in ctx.lab.hosts]


def test_down_purge_over_ssh_leaves_nothing(ctx):
    proc = ctx.run("down", "--purge")
    assert proc.returncode == 0, proc.stderr
    for h in ctx.lab.hosts:
        assert processes(h) == (0, 0), h.name
        assert not h.path("/var/lib/foundation/consul").exists(), h.name
    assert not (ctx.root / "state" / "state.json").exists()


@pytest.mark.parametrize("delays", [(1.0, 3.0, 6.0)])
def test_up_killed_at_several_points_converges_without_duplicates(ctx, delays):
    for delay in delays:
        up = subprocess.Popen(
            ctx.argv("up"), cwd=ctx.root, env=ctx.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        time.sleep(1.5)  # remote commands of the killed run finish or die with their SSH channel
        counts = [processes(h) for h in ctx.lab.hosts]
        assert all(c <= 1 and a <= 1 for c, a in counts), (delay, counts)
    proc = ctx.run("up", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [processes(h) for h in ctx.lab.hosts] == [(1, 1)] * 5
    again = ctx.run("up", "--json")
    assert again.returncode == 0 and all(h["state"] == "unchanged" for h in json.loads(again.stdout)["hosts"])
