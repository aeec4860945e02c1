"""A flood of spoofed mDNS answers costs a bounded number of KV keys (real Consul; answers as data, no multicast).

20,000 answers from 20,000 addresses reach the agent task's Watcher: at most MAX_DISCOVERED keys
are written, at most a burst of writes, goodbyes and the expiry sweep delete them, and the task's
memory maps stay capped.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from foundation_cli.agent import advertise
from foundation_cli.agent.context import AgentContext, AgentRecorder
from foundation_cli.core import keys, mdns_records
from foundation_cli.settings import Settings
from foundation_cli.tools import consul as consul_tool
from foundation_cli.tools.mdns_wire import Answer, build_txt

pytestmark = pytest.mark.timeout(180)


def spoofed(i: int) -> Answer:
    addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    fields = mdns_records.Advertisement(node=f"spoof-{i}", role="none", version="0.1.0").fields()
    return Answer(
        service_type=mdns_records.SERVICE_TYPE,
        instance=f"spoof-{i}@{addr}.{mdns_records.SERVICE_TYPE}",
        addresses=[addr],
        port=22,
        text=build_txt(fields),
    )


def discovered(client) -> dict[str, dict]:
    _i, items = client.kv.get(keys.DISCOVERED, recurse=True)
    return {i["Key"][len(keys.DISCOVERED) :]: json.loads(i["Value"]) for i in items or []}


def test_twenty_thousand_spoofed_answers_make_a_bounded_number_of_keys(fresh_consul, tmp_path):
    settings = Settings(consul_addr=fresh_consul.http_addr)
    client = consul_tool.connect(settings)
    client.kv.put(keys.CLUSTER, json.dumps({"cluster_id": "c-1", "datacenter": "dc1"}))
    ctx = AgentContext(
        node="n1",
        settings=settings,
        logger=logging.getLogger("test.mdns_flood"),
        recorder=AgentRecorder(),
        data_dir=tmp_path,
        agent_service_id="foundation-agent",
        agent_check_id="foundation-agent-ttl",
    )
    watcher = advertise.Watcher(ctx, client, {"cluster_id": "c-1", "datacenter": "dc1"})
    answers = [spoofed(i) for i in range(20_000)]
    for answer in answers:
        watcher.handle(answer, removed=False)
    keys_now = discovered(client)
    assert 0 < len(keys_now) <= advertise.MAX_DISCOVERED
    assert len(keys_now) <= advertise.WRITES_PER_MINUTE + 2  # the burst; the rest waits for tokens
    assert len(watcher._instances) <= advertise.MAX_INSTANCES
    assert all(v["status"] == "unclaimed" and v["seen_by"] == "n1" for v in keys_now.values())

    # Goodbyes for what was recorded delete it (instances still remembered).
    recorded = set(keys_now)
    for answer in answers:
        if answer.addresses[0] in recorded and answer.instance in watcher._instances:
            watcher.handle(answer, removed=True)
    assert len(discovered(client)) < len(keys_now)

    # Expiry: what is not heard again is swept, also another agent's stale leftovers.
    watcher.handle(answers[0], removed=False)
    watcher._tokens = float(advertise.WRITES_PER_MINUTE)
    watcher.handle(answers[1], removed=False)
    assert discovered(client)
    stale = {"address": "10.9.9.9", "status": "unclaimed", "seen_by": "gone", "last_seen": int(time.time()) - 10_000}
    client.kv.put(keys.DISCOVERED + "10.9.9.9", json.dumps(stale))
    for addr in list(watcher._seen):
        watcher._seen[addr] -= advertise.EXPIRE_AFTER + 1
    watcher.sweep()
    assert discovered(client) == {}
