"""`foundation broadcast` / `listen` against a real Consul agent (single node; the 3-node lab test is separate)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from foundation_cli.core import envelope
from foundation_cli.facades import channels as channels_mod
from foundation_cli.facades.channels import Channels
from foundation_cli.settings import resolve
from foundation_cli.tools import consul as consul_tool

pytestmark = pytest.mark.timeout(120)


def cli(agent, *args: str, input: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "foundation_cli", *args],
        env=agent.env,
        input=input,
        capture_output=True,
        timeout=timeout,
    )


def start_listener(agent, *args: str) -> subprocess.Popen:
    """Start `foundation listen …` and wait until it has taken its snapshot of the event list."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundation_cli", "listen", *args],
        env=agent.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stderr.readline().decode()
    assert "listening on" in line, line + proc.stderr.read().decode() if proc.poll() is not None else line
    return proc


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), err.decode()


def client_for(agent):
    return consul_tool.connect(resolve(consul_addr=agent.http_addr, env={}))


def test_broadcast_reaches_listener_once_in_order_with_kv_spill(consul_agent) -> None:
    listener = start_listener(consul_agent, "orders", "--json", "--count", "4", "--timeout", "40s")
    try:
        big = os.urandom(3072).hex().encode()[:4096]  # 4 KB of text
        sent = []
        for args, data in (
            (["hello"], None),
            (["-"], big),
            (["-"], b"\x00\x01\xfe\xff binary"),
            (['{"n": 1}', "--data-json"], None),
        ):
            proc = cli(consul_agent, "broadcast", "orders", *args, "--json", input=data)
            assert proc.returncode == 0, proc.stderr
            sent.append(json.loads(proc.stdout))
        code, out, err = finish(listener)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert code == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    assert [m["id"] for m in got] == [s["id"] for s in sent]  # once each, in order
    assert got[0]["data"] == "hello" and got[0]["via"] == "event"
    assert got[1]["data"] == big.decode() and got[1]["via"] == "kv:blobs" and got[1]["size"] == 4096
    assert got[2]["encoding"] == "base64" and got[2]["content_type"] == "application/octet-stream"
    assert got[3]["data"] == {"n": 1} and got[3]["content_type"] == "application/json"
    assert sent[1]["inline"] is False and sent[1]["stored"] == [f"foundation/channels/orders/blobs/{sent[1]['id']}"]
    assert consul_agent.kv_get(sent[1]["stored"][0]) is not None
    assert all(s["event_id"] for s in sent)


def test_since_replays_durable_history_for_a_late_listener(consul_agent) -> None:
    ids = []
    for text in ("one", "two", "x" * 2000):
        proc = cli(consul_agent, "broadcast", "audit", text, "--durable", "--json")
        assert proc.returncode == 0, proc.stderr
        ids.append(json.loads(proc.stdout)["id"])
    proc = cli(consul_agent, "listen", "audit", "--json", "--since", "all", "--count", "3", "--timeout", "10s")
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [m["id"] for m in got] == ids and {m["via"] for m in got} == {"history"}
    assert got[2]["data"] == "x" * 2000
    proc = cli(consul_agent, "listen", "audit", "--json", "--since", ids[0], "--count", "2", "--timeout", "10s")
    assert [json.loads(line)["id"] for line in proc.stdout.splitlines()] == ids[1:]


def test_exec_runs_once_per_message_with_payload_on_stdin(consul_agent, tmp_path) -> None:
    out_file = tmp_path / "got"
    cmd = f'cat >> {out_file}; echo " $FOUNDATION_CHANNEL" >> {out_file}'
    listener = start_listener(consul_agent, "hooks", "--exec", cmd, "--count", "2", "--timeout", "30s")
    try:
        for text in ("first", "second"):
            assert cli(consul_agent, "broadcast", "hooks", text).returncode == 0
        code, _out, err = finish(listener)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert code == 0, err
    assert out_file.read_text() == "first hooks\nsecond hooks\n"


def test_raw_consul_event_on_the_channel_is_passed_on(consul_agent, consul_bin) -> None:
    listener = start_listener(consul_agent, "raw", "--json", "--count", "1", "--timeout", "30s")
    try:
        subprocess.run(
            [consul_bin, "event", "-name=foundation:raw", "plain"],
            env=consul_agent.env,
            check=True,
            capture_output=True,
            timeout=10,
        )
        code, out, err = finish(listener)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert code == 0, err
    message = json.loads(out)
    assert message["via"] == "raw-event" and message["data"] == "plain"


def test_inline_limit_holds_at_the_boundary_with_longest_name_and_filters(consul_agent) -> None:
    channel = "c" * 64
    filters = {"node": ".*", "service": "consul", "tag": ".*"}
    budget = envelope.inline_budget(channel, **filters)
    ch = Channels(client_for(consul_agent))
    # A fixed time with all three decimals: the envelope's length must not change between probe and send.
    now = 1795830789.123
    probe = envelope.Envelope(
        id=envelope.new_id(), time=now, sender=ch.sender_node(), content_type="text/plain", data=b""
    )
    fill = budget - len(probe.to_wire())
    # Consul must accept an envelope of exactly the budget.
    at_limit = ch.broadcast(channel, b"a" * fill, now=now, **filters)
    assert at_limit.inline and at_limit.event_id
    over = ch.broadcast(channel, b"a" * (fill + 1), now=now, **filters)
    assert not over.inline and over.stored


def test_old_blobs_are_collected_and_history_is_bounded(consul_agent, monkeypatch) -> None:
    ch = Channels(client_for(consul_agent))
    old = ch.broadcast("gc", b"o" * 1000, now=time.time() - channels_mod.BLOB_RETENTION - 60)
    new = ch.broadcast("gc", b"n" * 1000)
    assert old.stored[0] in new.deleted and consul_agent.kv_get(old.stored[0]) is None
    assert consul_agent.kv_get(new.stored[0]) is not None
    monkeypatch.setattr(channels_mod, "HISTORY_MAX", 3)
    ids = [ch.broadcast("bounded", f"m{i}".encode(), durable=True).id for i in range(5)]
    kept = sorted(k.rsplit("/", 1)[1] for k in consul_agent.kv_dump("foundation/channels/bounded/history/"))
    assert kept == ids[2:]


def _normalized(agent, prefix: str) -> dict[str, object]:
    """KV under ``prefix`` with message ids and times replaced (they differ between two runs)."""
    out = {}
    for key, value in agent.kv_dump(prefix).items():
        key = re.sub(r"\d{13}-[0-9a-f]{6}", "ID", key)
        data = json.loads(value)
        data.update(id="ID", t=0, n="NODE")
        out[key] = data
    return out


@pytest.mark.parametrize("payload", ["small", "large"])
def test_dry_run_replays_to_the_same_kv_state(consul_agent, fresh_consul, payload) -> None:
    channel = f"replay-{payload}"
    text = "hi" if payload == "small" else "z" * 3000
    real = cli(consul_agent, "broadcast", channel, text, "--durable")
    assert real.returncode == 0, real.stderr
    dry = cli(fresh_consul, "broadcast", channel, text, "--durable", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert fresh_consul.kv_dump("foundation/") == {}  # the dry run changed nothing
    script = dry.stdout.decode()
    assert "/v1/event/fire/foundation:" + channel in script
    replay = subprocess.run(["bash", "-c", script], env=fresh_consul.env, capture_output=True, timeout=30)
    assert replay.returncode == 0, replay.stderr
    prefix = f"foundation/channels/{channel}/"
    assert _normalized(fresh_consul, prefix) == _normalized(consul_agent, prefix) != {}


@pytest.mark.parametrize(
    "args, message",
    [
        (["broadcast", "bad name", "x"], "invalid channel name"),
        (["broadcast", "ok", "x", "--tag", "blue"], "--tag needs --service"),
        (["broadcast", "ok", "x", "--node", "web-("], "not a valid regular expression"),
        (["broadcast", "ok", "{nope", "--data-json"], "not valid JSON"),
        (["broadcast", "ok", "x", "--content-type", "bogus"], "invalid --content-type"),
        (["listen", "ok", "--since", "yesterday"], "invalid --since"),
        (["listen", "ok", "--timeout", "5x"], "--timeout"),
    ],
)
def test_bad_input_is_one_line_and_stores_nothing(consul_agent, args, message) -> None:
    proc = cli(consul_agent, *args)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and message in err and "Traceback" not in err
    assert err.splitlines()[0].startswith("error:") and len(err.splitlines()) <= 2
    assert consul_agent.kv_dump("foundation/channels/ok/") == {}


def test_explain_shows_the_kv_spill_and_the_event_fire(consul_agent) -> None:
    proc = cli(consul_agent, "broadcast", "shown", "y" * 1000, "--explain")
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.decode()
    spill = err.index("-X PUT http://127.0.0.1:")
    assert "/v1/kv/foundation/channels/shown/blobs/" in err[spill : spill + 200]
    assert "/v1/event/fire/foundation:shown" in err[spill:] and "consul event -name=foundation:shown" in err
    assert '"r":"blobs"' in err and '"sz":1000' in err


def test_explain_of_listen_shows_both_readers_blocking_queries_and_the_history_read(consul_agent) -> None:
    """What the reader threads send is shown too: the event list, the history's keys, the KV read of a catch-up."""
    listener = subprocess.Popen(
        [sys.executable, "-m", "foundation_cli", "listen", "seen", "--explain", "--json", "--count", "1"]
        + ["--timeout", "8s"],
        env=consul_agent.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    before = b""
    for _ in range(40):  # the initial reads are shown first, then "listening on"
        line = listener.stderr.readline()
        before += line
        if not line or b"listening on" in line:
            break
    assert b"listening on" in before, before
    try:
        # A durable message whose event never reaches this node (filtered away): read from the history.
        sent = Channels(client_for(consul_agent)).broadcast("seen", b"kept", durable=True, node="^no-such-node$")
        code, out, err = finish(listener)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert code == 1 and out == "" and "received 0 of 1" in err  # not for this node: not delivered
    assert re.search(r"/v1/event/list\?name=foundation%3Aseen&index=\d+&wait=\d+s", err), err
    assert re.search(r"/v1/kv/foundation/channels/seen/history/\?index=\d+&wait=\d+s&keys=True", err), err
    assert f"/v1/kv/foundation/channels/seen/history/{sent.id}" in err  # read, found filtered away, not shown


def test_a_token_that_may_not_read_the_channel_kv_still_gets_live_messages(consul_agent_acl, consul_bin) -> None:
    """Before the history reader, `listen` needed no KV read for inline messages: it still does not."""
    admin = {**consul_agent_acl.env, "CONSUL_HTTP_TOKEN": consul_agent_acl.token}
    rules = 'event_prefix "" { policy = "read" }\nagent_prefix "" { policy = "read" }'
    made = subprocess.run(
        [consul_bin, "acl", "policy", "create", "-name", "events-only", "-rules", rules],
        env=admin,
        capture_output=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    token = subprocess.run(
        [consul_bin, "acl", "token", "create", "-policy-name", "events-only", "-format", "json"],
        env=admin,
        capture_output=True,
        timeout=30,
    )
    assert token.returncode == 0, token.stderr
    reader = SimpleNamespace(env={**consul_agent_acl.env, "CONSUL_HTTP_TOKEN": json.loads(token.stdout)["SecretID"]})
    listener = start_listener(reader, "acl", "--json", "--count", "1", "--timeout", "30s")
    try:
        sent = cli(SimpleNamespace(env=admin), "broadcast", "acl", "hello", "--json")
        assert sent.returncode == 0, sent.stderr
        code, out, err = finish(listener)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    # Consul 1.8 lists only the keys a token may read (no 403 unless acl.enable_key_list_policy): the
    # history simply looks empty to this listener, so nothing is caught up and nothing is said.
    assert code == 0 and json.loads(out)["data"] == "hello" and "Traceback" not in err, err


def test_agent_sweep_deletes_expired_payloads_on_idle_channels(consul_agent) -> None:
    import logging
    from types import SimpleNamespace

    from foundation_cli.agent import channels_gc

    ch = Channels(client_for(consul_agent))
    old = ch.broadcast("idle", b"i" * 1000, now=time.time() - channels_mod.BLOB_RETENTION - 60)
    fresh = ch.broadcast("idle2", b"f" * 1000)
    settings = resolve(consul_addr=consul_agent.http_addr, env={})
    ctx = SimpleNamespace(consul=lambda **kw: consul_tool.connect(settings, **kw), logger=logging.getLogger("t"))
    deleted = channels_gc.sweep(ctx)  # the single test agent is the Raft leader
    assert old.stored[0] in deleted and consul_agent.kv_get(old.stored[0]) is None
    assert consul_agent.kv_get(fresh.stored[0]) is not None


def test_a_reference_that_arrives_before_its_payload_waits_for_it(consul_agent) -> None:
    """The broadcaster stores a spilled payload while its event travels: a listener may see the event first."""
    import threading

    client = client_for(consul_agent)
    sender = Channels(client)
    message = envelope.Envelope(
        id=envelope.new_id(time.time()),
        time=time.time(),
        sender="n1",
        content_type="text/plain",
        data=b"x" * 4000,
        channel="early",
    )
    key = envelope.channel_key("early", "blobs", message.id)
    reference = envelope.Envelope.from_wire(message.as_reference("blobs").to_wire())
    reference.channel = "early"
    late = threading.Timer(0.4, lambda: client.kv.put(key, message.to_wire()))
    late.start()
    try:
        got = sender.resolve(reference)
    finally:
        late.join()
    assert got.data == b"x" * 4000 and got.via == "kv:blobs"
