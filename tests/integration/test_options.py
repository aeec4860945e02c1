"""Options no other test exercised, on one real Consul with a real node agent:
`start-singleton --cwd --check-http`, `logs --follow` and `discover --near`.

The service is Python's own HTTP server started in the directory given by --cwd: a file that exists only
there, served over HTTP, proves the working directory; the same URL is the --check-http health check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.integration.test_placement_support import (
    agent_passing,
    cli,
    http_json,
    start_local_agent,
    stop_process,
    wait_for,
)
from tests.lab.consul import free_ports


@pytest.mark.timeout(150)
def test_cwd_check_http_logs_follow_and_discover_near(fresh_consul, tmp_path):
    addr, env = fresh_consul.http_addr, fresh_consul.env
    site = tmp_path / "site"
    site.mkdir()
    (site / "marker.txt").write_text("served from --cwd\n")
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/marker.txt"
    agent = start_local_agent(addr, tmp_path / "data", tmp_path / "agent.log")
    follow = None
    try:
        wait_for(lambda: agent_passing(addr), 20, "the agent to register")
        cli(
            ["start-singleton", "web", "--cwd", str(site), "--check-http", url, "--port", str(port)]
            + ["--", sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            env,
        )
        body = wait_for(lambda: urllib.request.urlopen(url, timeout=2).read(), 20, "the server in --cwd")
        assert body == b"served from --cwd\n"

        # --check-http: Consul runs it, and it passes (the file exists only in the --cwd directory).
        def http_check():
            checks = http_json(f"{addr}/v1/health/checks/web") or []
            return [c for c in checks if c["CheckID"] == "foundation:web:http" and c["Status"] == "passing"]

        check = wait_for(http_check, 40, "the --check-http check to pass")[0]
        assert check["Type"] == "http"

        # logs --follow prints output written after it started (http.server logs each request).
        follow = subprocess.Popen(
            [sys.executable, "-m", "foundation_cli", "logs", "web", "--follow", "-n", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)  # tail -F is reading before the request below
        urllib.request.urlopen(url + "?followed=1", timeout=2).read()
        line = follow.stdout.readline()
        while line and "followed=1" not in line:
            line = follow.stdout.readline()
        assert "GET /marker.txt?followed=1" in line, line
        assert follow.poll() is None  # still following

        # discover --near _agent: sorted by round-trip time from this agent; the instance is there.
        found = json.loads(cli(["discover", "web", "--near", "_agent", "--json"], env).stdout)
        rows = found if isinstance(found, list) else found.get("instances", [])
        assert [r["port"] for r in rows] == [port], found
        # --near a real node sorts from it; a node that does not exist is an error, not silently unsorted.
        node = rows[0]["node"]
        found = json.loads(cli(["discover", "web", "--near", node, "--json"], env).stdout)
        assert [r["port"] for r in found["instances"]] == [port], found
        unknown = cli(["discover", "web", "--near", "no-such-node"], env, check=False)
        assert unknown.returncode == 5, unknown.stderr
        assert "no-such-node: no node by that name" in unknown.stderr and node in unknown.stderr, unknown.stderr
        assert "Traceback" not in unknown.stderr
        cli(["stop", "web"], env)
    finally:
        if follow is not None:
            stop_process(follow, timeout=5)
        stop_process(agent)
