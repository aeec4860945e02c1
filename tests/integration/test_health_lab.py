"""A healthy 3-server cluster built by `foundation up` (SSH, lab hosts) yields no optimizer warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.cli import cluster_env, pinned_bundle

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]
SCHEMAS = Path(__file__).resolve().parents[2] / "foundation_cli" / "schemas"


def test_up_cluster_has_no_warnings_and_status_validates(make_lab, tmp_path):
    lab = make_lab(3)
    env = cluster_env(tmp_path, bundle=pinned_bundle(tmp_path))  # pinned: the package may be edited meanwhile
    hosts = "".join(f"  - {h.ip}\n" for h in lab.hosts)
    (tmp_path / "foundation.yaml").write_text(
        f"hosts:\n{hosts}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
        f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "foundation_cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=200,
        )

    up = run("up", "--json")
    assert up.returncode == 0, up.stderr
    jsonschema = pytest.importorskip("jsonschema")

    res = run("optimize", "--json", "--window", "1")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    jsonschema.validate(report, json.loads((SCHEMAS / "optimize.json").read_text()))
    assert {r["id"]: r["severity"] for r in report["recommendations"] if r["severity"] != "info"} == {}
    assert report["rule_errors"] == {} and report["read_errors"] == {}, (report["rule_errors"], report["read_errors"])

    res = run("status", "--json", "--window", "0.5")
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    jsonschema.validate(status, json.loads((SCHEMAS / "status.json").read_text()))
    assert status["servers"]["voters"] == 3 and status["members"]["by_state"] == {"alive": 3}
    assert status["agent"]["gossip_encrypted"] is True and status["cluster"]["cluster_id"]
