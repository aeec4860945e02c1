"""`--explain` under concurrency against a real Consul: one whole block per request, in send order.

Threads send reads through the recording gateway at once — a slow one (a large recursive read)
first, quick ones after it — so answers come back out of order. The explain output (the same
listener the CLI subscribes) must still be one contiguous block per request, in the order the
requests were sent; and `foundation status --explain`, which reads in threads, likewise.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import urllib.request

import pytest

from foundation_cli.commands.output import Output
from foundation_cli.raw.recorder import Recorder, use_recorder
from foundation_cli.settings import Settings
from foundation_cli.tools import consul as consul_tool
from tests.lab.consul import ConsulAgent

pytestmark = pytest.mark.timeout(180)

BLOCK = re.compile(r"^\$ curl [^\n]*\n(?:  # consul: [^\n]*\n)?  ↳ [^\n]*\n", re.M)


@pytest.fixture(scope="module")
def big_prefix(consul_agent: ConsulAgent) -> str:
    value = b"x" * 400_000
    for n in range(6):
        req = urllib.request.Request(f"{consul_agent.http_addr}/v1/kv/big/{n}", data=value, method="PUT")
        urllib.request.urlopen(req, timeout=10).read()
    return "big/"


def _concurrent_reads(consul_agent: ConsulAgent, big_prefix: str) -> tuple[str, Recorder, int]:
    """One big read and twelve small ones just after it, from threads, with an --explain printer."""
    stream = io.StringIO()
    settings = Settings(consul_addr=consul_agent.http_addr)
    out = Output(settings, stdout=io.StringIO(), stderr=stream)
    recorder = Recorder()
    recorder.subscribe(out.explain_operation)
    client = consul_tool.connect(settings, recorder=recorder)
    paths = [f"/v1/kv/{big_prefix}?recurse="] + [f"/v1/kv/small/{n}" for n in range(12)]
    go = threading.Barrier(len(paths))

    def read(path: str, delay: float) -> None:
        go.wait(10)
        threading.Event().wait(delay)  # the big read leaves first, the small ones right behind it
        client.request("GET", path)

    with use_recorder(recorder):
        threads = [threading.Thread(target=read, args=(p, 0.0 if n == 0 else 0.0002 * n)) for n, p in enumerate(paths)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    return stream.getvalue(), recorder, len(paths)


def test_concurrent_reads_print_whole_blocks_in_send_order(consul_agent: ConsulAgent, big_prefix: str) -> None:
    # The scheduler decides whether the answers really come back out of order: try a few times until
    # they do (that is the case under test), and fail if they never do.
    for _attempt in range(8):
        text, recorder, sent = _concurrent_reads(consul_agent, big_prefix)
        by_send = sorted(recorder.operations, key=lambda op: op.started)
        completion = [op.url for op in recorder.operations]  # the order answers came back in
        if completion != [op.url for op in by_send]:
            break
    else:
        pytest.fail("the answers never came back out of order: the test could not make its case")
    blocks = BLOCK.findall(text)
    assert "".join(blocks) == text  # nothing but whole blocks: no line of one inside another
    assert len(blocks) == sent
    shown = [re.search(r"/v1/kv/(\S+?)['\s]", b).group(1) for b in blocks]
    assert shown == [re.search(r"/v1/kv/(\S+?)$", op.url.split("?")[0] + "").group(1) for op in by_send]


def test_status_explain_blocks(consul_agent: ConsulAgent) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP_")}
    env.update(CONSUL_HTTP_ADDR=consul_agent.http_addr, NO_COLOR="1")
    proc = subprocess.run(
        [sys.executable, "-m", "foundation_cli", "status", "--explain"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr
    explain = "".join(line + "\n" for line in proc.stderr.splitlines() if line.startswith(("$ ", "  ")))
    blocks = BLOCK.findall(explain)
    assert len(blocks) >= 5 and "".join(blocks) == explain
