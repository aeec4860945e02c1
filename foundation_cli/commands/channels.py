"""`foundation broadcast` / `listen`: messages to every node over Consul user events (issue 5)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from foundation_cli.commands.common import command, current, timeout_option
from foundation_cli.commands.completion import channel_names, node_names

PANEL = "Messaging"
app = typer.Typer()

SEMANTICS = (
    "Plain messages are best effort (Consul user events are gossiped, not stored): a listener prints each "
    "event its agent received once, but gossip can drop events and a listener that is down misses them. "
    "Durable messages (--durable) are kept in KV: a running listener reads those it missed as events, and "
    "`listen --since` replays them."
)


@command(app, "broadcast", rich_help_panel=PANEL)
def broadcast(
    channel: str = typer.Argument(..., help="Channel name (event foundation:CHANNEL).", autocompletion=channel_names),
    message: str = typer.Argument(
        ..., help="The message text; '-' reads it (bytes) from stdin, @FILE from a file (@@ for a leading @)."
    ),
    data_json: bool = typer.Option(
        False,
        "--data-json",
        help="MESSAGE is JSON data (validated; content type application/json). --json only formats the output.",
    ),
    content_type: Optional[str] = typer.Option(
        None, "--content-type", help="Content type in the envelope (default text/plain, or octet-stream for binary)."
    ),
    node: Optional[str] = typer.Option(
        None, "--node", help="Only nodes whose name matches this regex.", autocompletion=node_names
    ),
    service: Optional[str] = typer.Option(None, "--service", help="Only nodes running this service (regex)."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Only nodes whose --service has this tag (regex)."),
    durable: bool = typer.Option(
        False, "--durable", help="Also keep it in the channel's KV history (newest 100) for `listen --since`."
    ),
) -> None:
    """Send MESSAGE to every node's listeners on CHANNEL (a Consul user event).

    Payloads too big for an event (over 256 bytes of envelope, less with long names and filters) are stored in KV under foundation/channels/CHANNEL/ and the event carries a reference; stored copies are deleted after 1 hour. Best effort, like every Consul event: see `foundation listen --help` and docs/channels.md.

    Example: foundation broadcast deploys "web v42 is out" --durable --explain
    """
    import json

    from foundation_cli.errors import UsageError
    from foundation_cli.facades.channels import Channels

    # An argument that is not UTF-8 arrives with surrogate escapes: send the bytes the shell gave us.
    data = sys.stdin.buffer.read() if message == "-" else message.encode("utf-8", "surrogateescape")
    ctype = content_type
    if message.startswith("@@"):  # a message that starts with @ (curl's convention is the other way round)
        data = data[1:]
    elif message.startswith("@") and len(message) > 1:  # @FILE, as curl --data @FILE
        path = message[1:]
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            raise UsageError(
                f"message @FILE {path!r}: cannot read: {reason}", hint="@FILE sends that file (@@ for a leading @)"
            ) from None
        if ctype is None and not data_json and path.endswith(".json"):
            try:
                json.loads(data)
                ctype = "application/json"
            except ValueError:
                pass
    if data_json:
        if ctype not in (None, "application/json"):
            raise UsageError("--data-json sets the content type to application/json; drop --content-type")
        try:
            data = json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except ValueError as exc:
            raise UsageError(f"--data-json: MESSAGE is not valid JSON ({exc})") from None
        ctype = "application/json"
    if ctype is None:
        try:
            data.decode("utf-8")
            ctype = "text/plain"
        except UnicodeDecodeError:
            ctype = "application/octet-stream"
    from foundation_cli.core.envelope import CONTENT_TYPE_RE

    if not ctype or not CONTENT_TYPE_RE.match(ctype):  # what receivers accept (core/envelope.py)
        raise UsageError(f"invalid --content-type {ctype!r}", hint="e.g. text/plain, application/json")
    run = current()
    result = Channels(run.consul()).broadcast(
        channel, data, content_type=ctype, node=node, service=service, tag=tag, durable=durable
    )
    run.out.result(result.to_dict(), text=None)
    how = "inline" if result.inline else f"via KV ({result.stored[-1]})"
    run.out.info(f"sent {result.id} on {channel} ({result.size} bytes, {how}{', durable' if durable else ''})")


@command(app, "listen", rich_help_panel=PANEL)
def listen(
    channel: str = typer.Argument(..., help="Channel name (event foundation:CHANNEL).", autocompletion=channel_names),
    exec_cmd: Optional[str] = typer.Option(
        None, "--exec", help="Run this shell command per message, payload on stdin (FOUNDATION_* env)."
    ),
    since: Optional[str] = typer.Option(
        None, "--since", help="First replay durable history: a duration (10m), a message id, or 'all'."
    ),
    count: Optional[int] = typer.Option(None, "--count", min=1, help="Exit after N messages."),
    timeout: Optional[float] = timeout_option(None, "Exit after this long; with --count, exit 1 if fewer arrived"),
) -> None:
    """Print messages on CHANNEL as they arrive (blocking queries on /v1/event/list).

    Each message this node's Consul agent received is printed once (de-duplicated by event id and message id), in the order the agent received them; big payloads are fetched from KV transparently, while a separate reader keeps up with the agent's event list. With --json: one JSON object per line.

    Delivery is best effort for plain messages: Consul's gossip can drop events, and a listener that is not running misses them. Durable messages (broadcast --durable) that never arrived as events are read from the channel's history; --since also replays those sent before the listener started.

    Example: foundation listen deploys --since 10m --exec 'logger -t deploys'
    """
    import time

    from foundation_cli.core.envelope import parse_since
    from foundation_cli.errors import FoundationError
    from foundation_cli.facades.channels import Channels

    run = current()
    since_at = parse_since(since) if since is not None else None
    deadline = None
    if timeout is not None:
        deadline = time.time() + timeout
    channels = Channels(run.consul())
    received = 0
    ready = lambda node: run.out.info(f"listening on foundation:{channel} at node {node or '?'}")  # noqa: E731
    for message in channels.listen(
        channel, since=since_at, deadline=deadline, on_ready=ready, on_gap=run.out.warn, connect=run.consul
    ):
        received += 1
        if message.via == "missing":
            run.out.warn(f"message {message.id}: {message.extra.get('error')}")
        if exec_cmd:
            _run_exec(exec_cmd, message)
        elif run.settings.json:
            run.out.line(_one_line(message.to_dict()))
        else:
            run.out.line(_text(message))
        if not run.settings.dry_run:
            # A listener runs for days: keep only recent operations in memory.
            del run.recorder.operations[:-64]
        if count is not None and received >= count:
            return
    if count is not None and received < count:
        raise FoundationError(f"timed out after {timeout}: received {received} of {count} messages")


def _one_line(data: dict) -> str:
    import json

    from foundation_cli.raw.secrets import mask
    from foundation_cli.raw.text import json_printable

    return mask(json_printable(json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)))


def _text(message) -> str:
    from datetime import datetime

    from foundation_cli.raw.text import printable

    stamp = datetime.fromtimestamp(message.time).strftime("%H:%M:%S.%f")[:-3]
    if message.data is None:
        body = "<payload unavailable>"
    else:
        try:
            body = message.data.decode("utf-8")
        except UnicodeDecodeError:
            body = f"<{len(message.data)} bytes {message.content_type}>"
    # Sender and body are whatever the event says: escape sequences are shown, never played.
    return printable(f"{stamp} {message.sender or '-'}: {body}")


def _run_exec(cmd: str, message) -> None:
    """Run ``cmd`` with the payload on stdin, like a `consul watch` handler (once per message)."""
    import os
    import subprocess

    from foundation_cli.raw.operation import RawOperation
    from foundation_cli.raw.recorder import current_recorder

    run = current()
    op = RawOperation(kind="local-process", argv=["sh", "-c", cmd], stdin_desc=f"message {message.id}")
    recorder = current_recorder()
    if recorder.dry_run:
        op.dry_run = True
        op.finish(summary="not run (dry run)")
        recorder.add(op)
        return
    env = dict(os.environ)
    fields = dict(
        FOUNDATION_CHANNEL=message.channel,
        FOUNDATION_MESSAGE_ID=message.id,
        FOUNDATION_SENDER=message.sender,
        FOUNDATION_CONTENT_TYPE=message.content_type,
        FOUNDATION_EVENT_ID=message.event_id or "",
    )
    # Validated by the envelope parser; a raw event's fields come from Consul. An environment value
    # cannot hold NUL whatever the source: never let one end the listener.
    env.update({k: str(v).replace("\0", "") for k, v in fields.items()})
    try:
        proc = subprocess.run(["sh", "-c", cmd], input=message.data or b"", env=env, check=False)
    except (OSError, ValueError) as exc:
        op.finish(error=str(exc))
        recorder.add(op)
        run.out.warn(f"--exec failed for {message.id}: {exc}")
        return
    op.finish(status=proc.returncode, summary=f"exit {proc.returncode}")
    recorder.add(op)
    if proc.returncode != 0:
        run.out.warn(f"--exec exited {proc.returncode} for message {message.id}")


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    for info in app.registered_commands:
        root.registered_commands.append(info)
