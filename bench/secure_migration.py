#!/usr/bin/env python3
"""Migrate an open cluster (no ACLs, no TLS) to the secure defaults with a plain `foundation up`,
with a witness proving the cluster kept its leader.

    sudo python3 bench/secure_migration.py [--no-baseline]

A 4-host lab (3 servers, 1 client): `up` with `acl: {enabled: false}` and `tls: {enabled: false}`
(the cluster as an older Foundation made it), a KV key and a singleton; then `up` with the
defaults, which rolls the servers through the levels of core/secure_migration.py. All along a
witness, every 0.2 s, reads `/v1/status/leader` and writes a KV key with the real `consul kv put`
CLI, trying the servers in turn (the restarting one fails fast, the others answer): plain HTTP
while a server still has it, HTTPS with the cluster CA once it offers it, the management token
once `up` has written it to the state file. It prints the longest time without a successful
write and without any server reporting a leader.

Baseline (unless --no-baseline): the same witness during `foundation upgrade` on the migrated
cluster, a rolling restart that keeps quorum by design and costs one leader election (the
leader restarts last). The migration should be of the same order: one election per level.

Then the end state: the key survived, anonymous KV writes are refused over plain HTTP
(connection refused on the LAN address) and HTTPS (403), on the servers and on the client,
and a second `up` is unchanged. Too slow for CI (minutes). Every process lives in the lab's
namespaces and dies with it.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.lab.cli import cluster_env, foundation, pinned_bundle  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402

TICK = 0.2


class Witness(threading.Thread):
    """Leader reads and KV writes every TICK s against whichever server answers."""

    def __init__(self, ips: list[str], state_dir: Path) -> None:
        super().__init__(daemon=True)
        self.ips = ips
        self.state_dir = state_dir
        self.stop_at: float | None = None
        self.t0 = 0.0
        self.writes: list[float] = []  # monotonic times of successful writes
        self.leaders: list[float] = []  # times some server reported a leader
        self.failures = 0
        self.denied: list[float] = []  # times a server refused a write for ACL reasons
        self.ticks = 0
        self.consul = shutil.which("consul") or "consul"

    def _token(self) -> str | None:
        try:
            return json.loads((self.state_dir / "state.json").read_text()).get("token")
        except (OSError, ValueError):
            return None

    def _ca(self) -> Path | None:
        ca = self.state_dir / "tls" / "consul-agent-ca.pem"
        return ca if ca.exists() else None

    def _bases(self, ip: str) -> list[str]:
        plain, tls = f"http://{ip}:8500", f"https://{ip}:8501"
        return [tls, plain] if self._ca() else [plain]

    def _leader(self, base: str, token: str | None, ca: Path | None) -> bool:
        req = urllib.request.Request(base + "/v1/status/leader", headers={"X-Consul-Token": token} if token else {})
        ctx = ssl.create_default_context(cafile=str(ca)) if base.startswith("https") and ca else None
        try:
            with urllib.request.urlopen(req, timeout=1, context=ctx) as resp:
                return resp.status == 200 and json.loads(resp.read() or b'""') != ""
        except Exception:  # noqa: BLE001 - this server does not answer now
            return False

    def _write(self, base: str, token: str | None, ca: Path | None, n: int) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        if token:
            env["CONSUL_HTTP_TOKEN"] = token
        argv = [self.consul, "kv", "put", f"-http-addr={base}"]
        if base.startswith("https") and ca:
            argv.append(f"-ca-file={ca}")
        try:
            proc = subprocess.run([*argv, "witness/tick", str(n)], env=env, capture_output=True, timeout=2)
        except subprocess.TimeoutExpired:
            return False
        if proc.returncode != 0 and (b"ACL not found" in proc.stderr or b"ermission denied" in proc.stderr):
            self.denied.append(time.monotonic())  # a server up, but refusing this write (ACL state)
        return proc.returncode == 0

    def _one(self, ip: str, token: str | None, ca: Path | None, n: int) -> tuple[bool, bool]:
        led = False
        for base in self._bases(ip):
            led = led or self._leader(base, token, ca)
            if self._write(base, token, ca, n):
                return True, led
        return False, led

    def run(self) -> None:
        """Each tick asks every server at once and counts when the first write succeeds: the
        restarting server's timeouts do not delay the tick (a slow one finishes in the background)."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        n = 0
        with ThreadPoolExecutor(max_workers=4 * len(self.ips)) as pool:
            while self.stop_at is None or time.monotonic() < self.stop_at:
                n += 1
                self.ticks += 1
                token, ca = self._token(), self._ca()
                pending = {pool.submit(self._one, ip, token, ca, n) for ip in self.ips}
                wrote = led = False
                while pending and not wrote:
                    done, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
                    if not done:
                        break
                    for f in done:
                        ok, saw = f.result()
                        wrote, led = wrote or ok, led or saw
                now = time.monotonic()
                if wrote:
                    self.writes.append(now)
                else:
                    self.failures += 1
                if led:
                    self.leaders.append(now)
                time.sleep(TICK)

    def finish(self) -> None:
        self.stop_at = time.monotonic()
        self.join(timeout=30)

    def gaps(self, over: float) -> list[tuple[float, float]]:
        """(from, to) of each stretch without a write longer than ``over``, relative to ``self.t0``."""
        points = self.writes
        return [(a - self.t0, b - self.t0) for a, b in zip(points, points[1:], strict=False) if b - a > over]

    @staticmethod
    def longest_gap(times: list[float], start: float, end: float) -> float:
        points = [start, *[t for t in times if start <= t <= end], end]
        return max(b - a for a, b in zip(points, points[1:], strict=False))


def main() -> int:
    baseline = "--no-baseline" not in sys.argv
    root = Path(tempfile.mkdtemp(prefix="secure-migration-"))
    env = cluster_env(root, bundle=pinned_bundle(root))
    failures = []

    def run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
        t = time.monotonic()
        proc = foundation(args, env=env, cwd=root, timeout=900)
        return proc, time.monotonic() - t

    def check(ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            failures.append(what)

    def witnessed(*args: str) -> tuple[subprocess.CompletedProcess, float, float, float, Witness]:
        w = Witness([h.ip for h in lab.hosts[:3]], root / "state")
        w.start()
        time.sleep(2)  # a few ticks before it starts
        start = w.t0 = time.monotonic()
        proc, took = run(*args)
        end = time.monotonic()
        time.sleep(2)
        w.finish()
        return proc, took, w.longest_gap(w.writes, start, end), w.longest_gap(w.leaders, start, end), w

    lab = Lab(4)
    try:
        hosts = "".join(f"  - {h.ip}\n" for h in lab.hosts)
        base = (
            f"hosts:\n{hosts}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
            f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
        )
        (root / "foundation.yaml").write_text(base + "acl:\n  enabled: false\ntls:\n  enabled: false\n")
        proc, took = run("up")
        check(proc.returncode == 0, f"open cluster up ({took:.1f} s) {proc.stderr[-300:]}")
        check(run("kv", "put", "before", "open")[0].returncode == 0, "kv put on the open cluster")
        check(
            run("start-singleton", "mig", "--", "sh", "-c", "while true; do sleep 5; done")[0].returncode == 0,
            "singleton started",
        )
        (root / "foundation.yaml").write_text(base)
        proc, took, write_gap, leader_gap, w = witnessed("up", "-v")
        check(proc.returncode == 0, f"migration up exit {proc.returncode} ({took:.1f} s) {proc.stderr[-600:]}")
        for line in proc.stderr.splitlines():
            if "rolling restart" in line or "migrat" in line or "warning" in line or "ACLs" in line:
                print("   ", line)
        print(
            "    gaps over 1 s without a write (seconds after up started): "
            + ", ".join(f"{a:.1f}+{b - a:.1f}" for a, b in w.gaps(1.0))
        )
        if w.denied:
            print(
                f"    writes refused by some server for ACL reasons: {len(w.denied)}, from "
                f"{min(w.denied) - w.t0:.1f} s to {max(w.denied) - w.t0:.1f} s after up started"
            )
        print(
            f"witness during the migration: {w.ticks} ticks, {len(w.writes)} writes ok, {w.failures} ticks "
            f"without a write; longest without a write {write_gap:.1f} s, without a leader {leader_gap:.1f} s"
        )
        got, _ = run("kv", "get", "before")
        check(got.stdout.strip() == "open", "the key survived the migration")
        ps, _ = run("ps")
        print(ps.stdout)
        for h in lab.hosts:
            plain = subprocess.run(["curl", "-s", "-m", "3", "-X", "PUT", f"http://{h.ip}:8500/v1/kv/x", "-d", "1"])
            check(plain.returncode == 7, f"{h.name}: anonymous plain HTTP on the LAN address: connection refused")
            https = subprocess.run(
                ["curl", "-sk", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"]
                + [f"https://{h.ip}:8501/v1/kv/x", "-d", "1"],
                capture_output=True,
                text=True,
            )
            server = h in lab.hosts[:3]
            want = "403" if server else "000"  # a client serves no API on the LAN at all (docs/security.md)
            check(https.stdout == want, f"{h.name}: anonymous HTTPS PUT: {https.stdout} (want {want})")
        again, took = run("up", "--json")
        states = [h["state"] for h in json.loads(again.stdout)["hosts"]] if again.returncode == 0 else []
        check(states == ["unchanged"] * 4, f"second up unchanged ({took:.1f} s): {states}")
        if baseline:
            proc, took, b_write, b_leader, bw = witnessed("upgrade")
            check(proc.returncode == 0, f"baseline upgrade exit {proc.returncode} ({took:.1f} s) {proc.stderr[-300:]}")
            print(
                f"witness during `foundation upgrade` (baseline): {bw.ticks} ticks, longest without a write "
                f"{b_write:.1f} s, without a leader {b_leader:.1f} s"
            )
            print()
            print(f"{'':34} {'migration':>10} {'upgrade':>10} {'ratio':>7}")
            print(f"{'longest without a KV write (s)':34} {write_gap:10.1f} {b_write:10.1f} {write_gap / b_write:7.2f}")
            print(
                f"{'longest without a leader (s)':34} {leader_gap:10.1f} {b_leader:10.1f} "
                f"{leader_gap / max(b_leader, TICK):7.2f}"
            )
    finally:
        lab.close()
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
