"""An open cluster (made with ACLs and TLS off) migrated by a plain `up`, with a witness (marked slow).

4 lab hosts (3 servers, 1 client). While `up -v` rolls the servers through the levels of
core/secure_migration.py, the witness of bench/secure_migration.py writes a KV key with the real
`consul kv put` on every server at once every 0.2 s. Checked:

- the levels: every server restarted at ``offer``, then ``outgoing``, then ``final`` — no server at
  a level before every server finished the previous one — and the ACL bootstrap between;
- quorum kept: between one server restart and the next (and after the last), the cluster accepted
  KV writes again in the second half of that stretch. Enforcing TLS at once (what `up` did before)
  fails this: from the second restart on, the untouched server is alone and nothing is written
  until the roll ends;
- the end state: the key written before survived; anonymous plain HTTP on every LAN address is
  refused, anonymous HTTPS gets 403 on the servers, the client has no API on the LAN; the CLI
  works with the state file alone; a second `up` changes nothing.

Marked slow (about 3-4 minutes): deselected in CI, run with ``pytest -m slow``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.cli import cluster_env, foundation, pinned_bundle
from tests.lab.netns import Lab

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def _witness_class():
    spec = importlib.util.spec_from_file_location("secure_migration_bench", ROOT / "bench" / "secure_migration.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Witness


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if not shutil.which("consul") or not shutil.which("curl"):
        pytest.skip("needs the consul CLI and curl")
    root = tmp_path_factory.mktemp("secure-migration")
    env = cluster_env(root, bundle=pinned_bundle(root))

    def run(*args: str) -> subprocess.CompletedProcess:
        return foundation(args, env=env, cwd=root, timeout=600)

    lab = Lab(4)
    try:
        hosts = "".join(f"  - {h.ip}\n" for h in lab.hosts)
        base = (
            f"hosts:\n{hosts}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
            f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
        )
        (root / "foundation.yaml").write_text(base + "acl:\n  enabled: false\ntls:\n  enabled: false\n")
        proc = run("up")
        assert proc.returncode == 0, proc.stderr
        assert run("kv", "put", "before", "open").returncode == 0
        (root / "foundation.yaml").write_text(base)
        witness = _witness_class()([h.ip for h in lab.hosts[:3]], root / "state")
        witness.start()
        time.sleep(1)
        witness.t0 = time.monotonic()
        proc = run("up", "-v")
        end = time.monotonic()
        time.sleep(1)
        witness.finish()
        yield {"lab": lab, "run": run, "proc": proc, "witness": witness, "end": end, "root": root}
    finally:
        lab.close()


def _restarts(stderr: str) -> list[tuple[float, str, str]]:
    """(seconds after up started, host, level) of every rolling restart, from `up -v`'s progress lines."""
    pattern = re.compile(r"^\s*([0-9.]+)s\s+(\S+): rolling restart \((\w+):", re.M)
    return [(float(t), host, level) for t, host, level in pattern.findall(stderr)]


def test_migration_succeeds_in_levels(migrated):
    proc = migrated["proc"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    restarts = _restarts(proc.stderr)
    levels = [level for _t, _h, level in restarts]
    assert levels == ["offer"] * 3 + ["outgoing"] * 3 + ["final"] * 3, levels
    for level in ("offer", "outgoing", "final"):
        assert len({h for _t, h, lv in restarts if lv == level}) == 3  # each server once per level
    assert "ACLs bootstrapped" in proc.stderr
    assert proc.stderr.index("ACLs bootstrapped") > proc.stderr.index("rolling restart (offer")
    assert proc.stderr.index("ACLs bootstrapped") < proc.stderr.index("rolling restart (outgoing")


def test_quorum_kept_through_every_restart(migrated):
    """After every server restart the cluster takes writes again before the next restart begins."""
    w = migrated["witness"]
    marks = [t for t, _h, _lv in _restarts(migrated["proc"].stderr)]
    assert marks
    writes = [t - w.t0 for t in w.writes]
    bounds = [*marks, migrated["end"] - w.t0]
    for start, stop in zip(bounds, bounds[1:], strict=False):
        middle = (start + stop) / 2
        assert any(middle <= t <= stop for t in writes), (
            f"no KV write accepted between {middle:.1f}s and {stop:.1f}s after up started (restarts at {marks})"
        )


def test_end_state_is_secure_and_the_data_survived(migrated):
    lab, run = migrated["lab"], migrated["run"]
    got = run("kv", "get", "before")
    assert got.returncode == 0 and got.stdout.strip() == "open", got.stderr
    assert run("kv", "put", "after", "secure").returncode == 0  # the CLI: state file only (token, CA, HTTPS)
    state = json.loads((migrated["root"] / "state" / "state.json").read_text())
    assert state["token"] and all(a.startswith("https://") for a in state["consul_http_addrs"])
    for i, h in enumerate(lab.hosts):
        plain = subprocess.run(["curl", "-s", "-m", "3", "-X", "PUT", f"http://{h.ip}:8500/v1/kv/x", "-d", "1"])
        assert plain.returncode == 7, h  # connection refused: plain HTTP is on loopback only
        https = subprocess.run(
            ["curl", "-sk", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"]
            + [f"https://{h.ip}:8501/v1/kv/x", "-d", "1"],
            capture_output=True,
            text=True,
        )
        assert https.stdout == ("403" if i < 3 else "000"), (h, https.stdout)  # the client: no listener at all
    again = run("up", "--json")
    assert again.returncode == 0, again.stderr
    assert [h["state"] for h in json.loads(again.stdout)["hosts"]] == ["unchanged"] * 4
