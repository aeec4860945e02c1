#!/usr/bin/env python3
"""How fresh are Consul's own Raft snapshot files? (Why scheduled snapshots do not package them.)

One real Consul 1.8.7 server on loopback with ACLs on. Prints the Raft snapshot settings the
agent runs with (``/v1/agent/self`` DebugConfig), writes ``--writes`` KV entries, waits
``--wait`` seconds, then compares the newest ``raft/snapshots/<term>-<index>-<ms>`` directory in
the data dir with the cluster's current Raft index (``X-Consul-Index`` of a recursive KV read) and with what
``GET /v1/snapshot`` returns (which needs the management token, or ``acl = "write"``: each
rule below is tried with a token of its own). No lab, no root needed.

    python3 bench/raft_snapshot_freshness.py [--writes 50] [--wait 35]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.consul import start_agent  # noqa: E402

RULES = {
    'operator = "write"': 'operator = "write"',
    'acl = "read"': 'acl = "read"',
    'key_prefix "" write + operator write': 'key_prefix "" { policy = "write" }\noperator = "write"',
    'acl = "write"': 'acl = "write"',
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=50)
    ap.add_argument("--wait", type=float, default=35.0)
    args = ap.parse_args()
    agent = start_agent(acl=True)

    def req(method: str, path: str, token: str, data: bytes | None = None):
        r = urllib.request.Request(agent.http_addr + path, method=method, data=data)
        r.add_header("X-Consul-Token", token)
        try:
            with urllib.request.urlopen(r, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    try:
        assert agent.token
        _s, _h, body = req("GET", "/v1/agent/self", agent.token)
        debug = json.loads(body)["DebugConfig"]
        print(  # 0 / 0s: Consul's built-in defaults apply (16384 entries, checked every 30 s in its docs)
            f"RaftSnapshotThreshold {debug.get('RaftSnapshotThreshold')}, "
            f"RaftSnapshotInterval {debug.get('RaftSnapshotInterval')}"
        )
        for label, rules in RULES.items():
            req("PUT", "/v1/acl/policy", agent.token, json.dumps({"Name": f"p{len(label)}", "Rules": rules}).encode())
            _s, _h, body = req(
                "PUT", "/v1/acl/token", agent.token, json.dumps({"Policies": [{"Name": f"p{len(label)}"}]}).encode()
            )
            status, _h, _b = req("GET", "/v1/snapshot", json.loads(body)["SecretID"])
            print(f"GET /v1/snapshot with a token of {label}: {status}")
        for i in range(args.writes):
            req("PUT", f"/v1/kv/bench/x{i}", agent.token, b"v")
        time.sleep(args.wait)
        _s, headers, _b = req("GET", "/v1/kv/bench/?recurse=1", agent.token)
        current = int(headers.get("X-Consul-Index", 0))
        snaps = sorted(
            (agent.dir / "data" / "raft" / "snapshots").glob("*-*-*"), key=lambda p: int(p.name.split("-")[1])
        )
        newest = int(snaps[-1].name.split("-")[1]) if snaps else None
        print(
            f"after {args.writes} writes and {args.wait:.0f} s: KV index {current}, newest Raft snapshot file at index {newest}"
        )
        status, _h, archive = req("GET", "/v1/snapshot", agent.token)
        print(f"GET /v1/snapshot (management token): {status}, {len(archive)} bytes, current to the moment it is taken")
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
