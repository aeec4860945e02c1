#!/usr/bin/env python3
"""Migrate an open cluster (no ACLs, no TLS) to the secure defaults with a plain `foundation up`.

    sudo python3 bench/secure_migration.py

A 3-host lab: `up` with `acl: {enabled: false}` and `tls: {enabled: false}` (the cluster as an
older Foundation made it), a KV key and a singleton; then `up` with the defaults. Checks and prints:
the migration's wall time and exit status, that the key survived, what `ps` says, that anonymous
plain HTTP on a server's LAN address is refused and anonymous HTTPS gets 403, and that a second
`up` is unchanged. Too slow for CI (about 2 minutes: the first server restarted with TLS enforced
cannot reach the others until a second one has it, so the rolling restart waits out its leader
check once). Every process lives in the lab's namespaces and dies with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab.netns import Lab  # noqa: E402


def main() -> int:
    from foundation_cli.core import agent_bundle

    root = Path(tempfile.mkdtemp(prefix="secure-migration-"))
    pinned = root / agent_bundle.build().path.name
    shutil.copy(agent_bundle.build().path, pinned)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(
        FOUNDATION_STATE_DIR=str(root / "state"),
        XDG_CONFIG_HOME=str(root / "xdg"),
        NO_COLOR="1",
        FOUNDATION_AGENT_BUNDLE=str(pinned),
    )
    failures = []

    def run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
        t = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "foundation_cli", *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return proc, time.monotonic() - t

    def check(ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            failures.append(what)

    lab = Lab(3)
    try:
        hosts = "".join(f"  - {h.ip}\n" for h in lab.hosts)
        base = (
            f"hosts:\n{hosts}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
            f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
        )
        (root / "foundation.yaml").write_text(base + "acl:\n  enabled: false\ntls:\n  enabled: false\n")
        proc, took = run("up")
        check(proc.returncode == 0, f"open cluster up ({took:.1f} s)")
        check(run("kv", "put", "before", "open")[0].returncode == 0, "kv put on the open cluster")
        check(
            run("start-singleton", "mig", "--", "sh", "-c", "while true; do sleep 5; done")[0].returncode == 0,
            "singleton started",
        )
        (root / "foundation.yaml").write_text(base)
        proc, took = run("up", "--json")
        check(proc.returncode == 0, f"migration up exit {proc.returncode} ({took:.1f} s) {proc.stderr[-300:]}")
        got, _ = run("kv", "get", "before")
        check(got.stdout.strip() == "open", "the key survived the migration")
        ps, _ = run("ps")
        print(ps.stdout)
        ip = lab.hosts[0].ip
        plain = subprocess.run(["curl", "-s", "-m", "3", "-X", "PUT", f"http://{ip}:8500/v1/kv/x", "-d", "1"])
        check(plain.returncode == 7, "anonymous plain HTTP on the LAN address: connection refused")
        https = subprocess.run(
            [
                "curl",
                "-sk",
                "-m",
                "3",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "PUT",
                f"https://{ip}:8501/v1/kv/x",
            ],
            capture_output=True,
            text=True,
        )
        check(https.stdout == "403", f"anonymous HTTPS: {https.stdout}")
        again, took = run("up", "--json")
        states = [h["state"] for h in json.loads(again.stdout)["hosts"]] if again.returncode == 0 else []
        check(states == ["unchanged"] * 3, f"second up unchanged ({took:.1f} s): {states}")
    finally:
        lab.close()
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
