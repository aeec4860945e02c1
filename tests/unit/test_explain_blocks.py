"""`--explain` blocks: one block per operation, in send order under concurrency; remote scripts as heredocs."""

from __future__ import annotations

import shlex
import subprocess
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_cli.raw import render
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import Recorder, use_recorder


def _op(n: int) -> RawOperation:
    return RawOperation(kind="consul-http", method="GET", url=f"http://127.0.0.1:8500/v1/kv/k{n}")


def test_answers_are_shown_in_send_order_whatever_order_they_come_back() -> None:
    rec = Recorder()
    shown: list[RawOperation] = []
    rec.subscribe(shown.append)
    ops = [rec.begin(_op(n)) for n in range(5)]
    for n in (3, 1, 4):  # answers in a different order
        ops[n].finish(status=200)
        rec.add(ops[n])
    assert shown == []  # k0 is still out: nothing may jump ahead of it
    ops[0].finish(status=200)
    rec.add(ops[0])
    assert shown == ops[:2]
    ops[2].finish(status=200)
    rec.add(ops[2])
    assert shown == ops


def test_a_blocking_query_holds_nothing_back() -> None:
    rec = Recorder()
    shown: list[RawOperation] = []
    rec.subscribe(shown.append)
    poll = rec.begin(RawOperation(kind="consul-http", method="GET", url="http://h:1/v1/event/list?index=42&wait=5m"))
    quick = rec.begin(_op(1))
    rec.add(quick)
    assert shown == [quick]
    rec.add(poll)
    assert shown == [quick, poll]


def test_an_operation_that_never_came_back_does_not_hide_the_rest_at_the_end() -> None:
    rec = Recorder()
    shown: list[RawOperation] = []
    rec.subscribe(shown.append)
    with use_recorder(rec):
        lost = rec.begin(_op(0))
        later = rec.begin(_op(1))
        rec.add(later)
        assert shown == []
    assert shown == [later] and lost not in shown  # flushed when the run ended


def test_threads_blocks_are_contiguous_and_in_send_order() -> None:
    """Many threads send and answer out of order; each block prints whole, in send order."""
    import io

    rec = Recorder()
    out = io.StringIO()
    rec.subscribe(lambda op: out.write(render.explain_block(op)))
    gates = [threading.Event() for _ in range(40)]
    sent: list[RawOperation] = []
    sent_lock = threading.Lock()

    def worker(n: int) -> None:
        with sent_lock:
            op = rec.begin(_op(n))
            sent.append(op)
        gates[n].wait(10)
        op.finish(status=200, summary=f"answer {n}")
        rec.add(op)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    while len(sent) < 40:
        threading.Event().wait(0.001)
    for n in reversed(range(40)):  # answers come back last-sent first
        gates[n].set()
    for t in threads:
        t.join(10)
    blocks = out.getvalue().split("$ ")[1:]
    assert len(blocks) == 40
    order = [int(b.split("/v1/kv/k", 1)[1].split()[0]) for b in blocks]
    assert order == [int(op.url.rsplit("k", 1)[1]) for op in sent]
    for n, block in zip(order, blocks, strict=True):
        assert block.count("\n") == 3 and f"↳ 200 · answer {n}" in block  # request, equivalent, result


# -- remote scripts as heredocs ---------------------------------------------------------------


def _run_as_remote(block: list[str]) -> subprocess.CompletedProcess:
    """Run a rendered ssh block locally: ssh hands its command string to the login shell (sh -c)."""
    head, *rest = block
    assert head.startswith("ssh root@h ")
    local = "sh -c " + head[len("ssh root@h ") :]  # what sshd does with the remote command string
    return subprocess.run(["bash", "-c", "\n".join([local, *rest])], capture_output=True, text=True, timeout=20)


_line = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=30
).filter(lambda s: "\n" not in s)


@settings(max_examples=60, deadline=None)
@given(words=st.lists(_line, min_size=1, max_size=6), tail=st.sampled_from(["", "\n"]))
def test_heredoc_block_runs_the_same_script(words: list[str], tail: str) -> None:
    script = "\n".join(f"printf '%s\\n' {shlex.quote(w)}" for w in words) + "\necho 'done'; cat" + tail
    op = RawOperation(kind="ssh-exec", host="h", user="root", command=f"sh -c {shlex.quote(script)}")
    block = render.ssh_block(op)
    assert block is not None
    marker = block[-1]
    assert block[0].endswith(f"<<'{marker}'") and all(marker not in line for line in block[1:-1])
    shown = _run_as_remote(block)
    direct = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert (shown.returncode, shown.stdout) == (direct.returncode, direct.stdout)


@settings(max_examples=40, deadline=None)
@given(words=st.lists(_line, min_size=1, max_size=4))
def test_one_line_command_with_quotes_becomes_a_block_that_runs_the_same(words: list[str]) -> None:
    command = "set -e; " + "; ".join(f"printf '%s\\n' {shlex.quote(w)}" for w in words) + "; echo 'end'"
    op = RawOperation(kind="ssh-exec", host="h", user="root", command=command)
    block = render.ssh_block(op)
    assert block is not None and block[1] == command and len(block) == 3
    shown = _run_as_remote(block)
    direct = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert (shown.returncode, shown.stdout) == (direct.returncode, direct.stdout)


def test_marker_line_inside_the_script_cannot_end_the_heredoc() -> None:
    script = "echo one\nFOUNDATION_EOF\necho 'two'"
    op = RawOperation(kind="ssh-exec", host="h", user="root", command=f"sh -c {shlex.quote(script)}")
    block = render.ssh_block(op)
    assert block is not None and block[-1] != "FOUNDATION_EOF"


def test_plain_commands_and_stdin_commands_stay_one_line() -> None:
    one = RawOperation(kind="ssh-exec", host="h", user="root", command="systemctl restart foundation-consul")
    assert render.render_lines(one) == ["ssh root@h 'systemctl restart foundation-consul'"]
    data = RawOperation(
        kind="ssh-exec", host="h", user="root", command="sh -c " + shlex.quote("a\nb"), stdin_desc="3 bytes"
    )
    assert render.ssh_block(data) is None and len(render.render_lines(data)) == 1


def test_dry_run_script_keeps_a_read_scripts_lines_as_comments() -> None:
    op = RawOperation(
        kind="ssh-exec", host="h", user="root", command="sh -c " + shlex.quote("touch /x\nrm -rf /y"), read_only=True
    )
    text = render.script([op], title="t")
    body = text.split("set -euo pipefail\n", 1)[1]
    assert all(line.startswith("#") for line in body.splitlines())
    assert "#   touch /x" in body
    proc = subprocess.run(["bash", "-n", "-c", text], capture_output=True, timeout=10)
    assert proc.returncode == 0


def test_explain_block_shape() -> None:
    op = RawOperation(kind="consul-http", method="PUT", url="http://127.0.0.1:8500/v1/kv/a", body=b"b")
    op.finish(status=200, summary="true")
    lines = render.explain_block(op).splitlines()
    assert lines[0].startswith("$ curl ") and lines[1].startswith("  # consul: consul kv put")
    assert lines[2].startswith("  ↳ 200 · true")


def test_a_request_that_never_returns_stops_holding_the_rest_after_a_while(monkeypatch) -> None:
    from foundation_cli.raw import recorder as recorder_module

    rec = Recorder()
    shown: list[RawOperation] = []
    rec.subscribe(shown.append)
    lost = rec.begin(_op(0))
    later = rec.begin(_op(1))
    rec.add(later)
    assert shown == []
    monkeypatch.setattr(recorder_module, "STALLED", 0.0)
    again = rec.begin(_op(2))
    rec.add(again)
    assert shown == [later, again]
    rec.add(lost)  # it came back after all: shown then
    assert shown == [later, again, lost]
