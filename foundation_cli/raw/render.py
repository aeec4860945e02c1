"""The one renderer for raw operations: curl lines, ``consul`` CLI equivalents, ssh/scp lines, scripts.

Everything printed passes through :func:`foundation_cli.raw.secrets.mask`.
The token is never rendered: curl lines send ``"$CONSUL_HTTP_TOKEN"``.
"""

from __future__ import annotations

import shlex
import urllib.parse

from foundation_cli.raw.address import DEFAULT_CONSUL_ADDRESS
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.secrets import mask

TOKEN_HEADER = '-H "X-Consul-Token: $CONSUL_HTTP_TOKEN"'


def _is_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "\x00" not in text


def bash_bytes(data: bytes) -> str:
    """A bash word that expands to exactly ``data``; only for text (a bash word cannot hold NUL)."""
    if _is_text(data):
        return shlex.quote(data.decode("utf-8"))
    return "$'" + "".join(_octal(b) for b in data) + "'"


_PRINTF_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.-_/:=+@{}[]")


def _octal(b: int) -> str:
    return chr(b) if b in _PRINTF_SAFE else f"\\{b:03o}"


def printf_bytes(data: bytes) -> str:
    """A ``printf`` command writing exactly ``data`` to stdout (NUL and non-UTF-8 bytes included)."""
    if _is_text(data):
        return f"printf '%s' {shlex.quote(data.decode('utf-8'))}"
    return "printf '" + "".join("%%" if b == 0x25 else _octal(b) for b in data) + "'"


def _body_args(body: bytes | None) -> tuple[str, str]:
    """(prefix, curl args) sending ``body`` byte for byte; a pipe when argv cannot carry it."""
    if not body:
        return "", ""
    if _is_text(body) and not body.startswith(b"@"):
        return "", f" --data-binary {shlex.quote(body.decode('utf-8'))}"
    return f"{printf_bytes(body)} | ", " --data-binary @-"


def _split_url(url: str) -> tuple[str, str, list[tuple[str, str]]]:
    parts = urllib.parse.urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    params = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    return base, urllib.parse.unquote(parts.path), params


def curl(op: RawOperation, *, addr_var: bool = False) -> str:
    """A copy-pasteable curl line for a consul-http operation.

    With ``addr_var`` the base address is ``$CONSUL_HTTP_ADDR`` so a script
    replays against whichever agent the user points it at.
    """
    assert op.kind == "consul-http" and op.url
    base, _path, params = _split_url(op.url)
    params = [(k, v) for k, v in params if k != "token"]
    path_and_query = op.url[len(base) :].split("?", 1)[0]
    if params:
        path_and_query += "?" + urllib.parse.urlencode(params)
    url = ("${CONSUL_HTTP_ADDR}" + path_and_query) if addr_var else (base + path_and_query)
    prefix, body = _body_args(op.body)
    method = (op.method or "GET").upper()
    parts = ["curl -sS --fail-with-body"]
    if method != "GET":
        parts.append(f"-X {method}")
    if op.token_used:
        parts.append(TOKEN_HEADER)
    parts.append(f'"{url}"' if addr_var else shlex.quote(url))
    return mask(prefix + " ".join(parts) + body)


def _q(value: str) -> str:
    return shlex.quote(value)


def consul_cli(op: RawOperation) -> str | None:
    """The equivalent ``consul`` CLI command, where one exists; ``None`` otherwise."""
    if op.kind != "consul-http" or not op.url:
        return None
    _base, path, plist = _split_url(op.url)
    params = dict(plist)
    method = (op.method or "GET").upper()
    body = op.body or b""
    flags = []
    for name in ("dc",):
        if name in params:
            flags.append(f"-datacenter={_q(params[name])}")
    if params.get("stale") is not None and "stale" in params:
        flags.append("-stale")
    f = (" " + " ".join(flags)) if flags else ""

    if path.startswith("/v1/kv/"):
        key = path[len("/v1/kv/") :]
        if method == "GET":
            if "keys" in params:
                sep = f" -separator={_q(params['separator'])}" if "separator" in params else ""
                return f"consul kv get{f} -keys{sep} {_q(key)}"
            rec = " -recurse" if "recurse" in params else ""
            return f"consul kv get{f} -detailed{rec} {_q(key)}" if rec == "" else f"consul kv get{f}{rec} {_q(key)}"
        if method == "PUT":
            extra = []
            if "cas" in params:
                extra.append(f"-cas -modify-index={params['cas']}")
            if "flags" in params:
                extra.append(f"-flags={params['flags']}")
            if "acquire" in params:
                extra.append(f"-acquire -session={_q(params['acquire'])}")
            if "release" in params:
                extra.append(f"-release -session={_q(params['release'])}")
            x = (" " + " ".join(extra)) if extra else ""
            if _is_text(body) and not body.startswith((b"@", b"-")):
                return f"consul kv put{f}{x} {_q(key)} {_q(body.decode('utf-8'))}"
            return f"{printf_bytes(body)} | consul kv put{f}{x} {_q(key)} -"
        if method == "DELETE":
            extra = " -recurse" if "recurse" in params else ""
            if "cas" in params:
                extra += f" -cas -modify-index={params['cas']}"
            return f"consul kv delete{f}{extra} {_q(key)}"
    if path.startswith("/v1/event/fire/") and method == "PUT":
        name = path[len("/v1/event/fire/") :]
        filt = "".join(
            f" -{flag}={_q(params[p])}"
            for p, flag in (("node", "node"), ("service", "service"), ("tag", "tag"))
            if p in params
        )
        payload = f" {_q(body.decode('utf-8', 'replace'))}" if body else ""
        return f"consul event{f} -name={_q(name)}{filt}{payload}"
    if path == "/v1/event/list" and method == "GET":
        name = f" -name={_q(params['name'])}" if "name" in params else ""
        return f"consul watch -type=event{name}"
    simple = {
        ("GET", "/v1/agent/members"): "consul members",
        ("GET", "/v1/catalog/services"): "consul catalog services",
        ("GET", "/v1/catalog/nodes"): "consul catalog nodes",
        ("GET", "/v1/catalog/datacenters"): "consul catalog datacenters",
        ("GET", "/v1/operator/raft/configuration"): "consul operator raft list-peers",
        ("GET", "/v1/operator/autopilot/configuration"): "consul operator autopilot get-config",
        ("GET", "/v1/agent/self"): "consul info",
        ("PUT", "/v1/agent/leave"): "consul leave",
        ("PUT", "/v1/agent/reload"): "consul reload",
        ("GET", "/v1/agent/metrics"): "consul debug -capture=metrics  # (point-in-time: curl is closer)",
    }
    if (method, path) in simple:
        return simple[(method, path)] + f
    if method == "PUT" and path.startswith("/v1/agent/force-leave/"):
        return f"consul force-leave {_q(path.rsplit('/', 1)[1])}"
    if method == "PUT" and path.startswith("/v1/agent/join/"):
        return f"consul join {_q(path.rsplit('/', 1)[1])}"
    if method == "PUT" and path.startswith("/v1/agent/service/deregister/"):
        return f"consul services deregister -id={_q(path.rsplit('/', 1)[1])}"
    if method == "PUT" and path == "/v1/operator/autopilot/configuration":
        return _autopilot_set(body)
    if method == "GET" and path.startswith("/v1/catalog/service/"):
        return f"consul catalog nodes -service={_q(path.rsplit('/', 1)[1])}{f}"
    return None


def _autopilot_set(body: bytes) -> str | None:
    import json

    try:
        conf = json.loads(body or b"{}")
    except ValueError:
        return None
    mapping = {
        "CleanupDeadServers": "cleanup-dead-servers",
        "LastContactThreshold": "last-contact-threshold",
        "MaxTrailingLogs": "max-trailing-logs",
        "ServerStabilizationTime": "server-stabilization-time",
    }
    flags = [
        f"-{flag}={str(conf[k]).lower() if isinstance(conf[k], bool) else conf[k]}"
        for k, flag in mapping.items()
        if k in conf
    ]
    return "consul operator autopilot set-config " + " ".join(flags)


def ssh_line(op: RawOperation) -> str:
    """``ssh``/``scp``-style line for ssh-exec and ssh-upload operations."""
    target = f"{op.user + '@' if op.user else ''}{op.host}"
    port = f" -p {op.port}" if op.port and op.port != 22 else ""
    if op.kind == "ssh-exec":
        stdin = f"  # stdin: {op.stdin_desc}" if op.stdin_desc else ""
        return mask(f"ssh{port} {target} {_q(op.command or '')}{stdin}")
    assert op.kind == "ssh-upload"
    size = len(op.content or b"")
    mode = f" (mode {op.mode:o})" if op.mode is not None else ""
    return mask(f"# upload {size} bytes to {target}:{op.path}{mode}")


def upload_command(path: str, mode: int | None) -> str:
    """The remote command an ssh-upload runs, content on stdin (the SSH adapter sends exactly this)."""
    import posixpath

    # The temporary file is private from its first byte (umask 077 in a subshell, after removing a
    # leftover that could keep a looser mode), gets its final mode, then replaces the target at once:
    # a secret is never readable by others, not even between the write and the chmod.
    tmp = _q(path + ".foundation-tmp")
    chmod = f" && chmod {mode:o} {tmp}" if mode is not None else ""
    return (
        f"mkdir -p {_q(posixpath.dirname(path) or '/')} && rm -f {tmp} && (umask 077 && cat > {tmp})"
        f"{chmod} && mv -f {tmp} {_q(path)}"
    )


def heredoc_marker(content: str, *, prefix: str = "FOUNDATION_EOF") -> str:
    """A quoted-heredoc end marker that no line of ``content`` can match (random, then checked).

    Use as ``<<'MARKER'`` (quoted: no expansion inside) followed by ``content`` and a line
    holding only ``MARKER``. A fixed marker can be ended early by content that holds it on a line
    of its own, turning the rest into live commands; a random one checked against every line cannot.
    """
    import secrets as _random

    lines = set(content.split("\n"))
    while True:
        marker = f"{prefix}_{_random.token_hex(8).upper()}"
        if not any(marker in line for line in lines):
            return marker


def upload_script(op: RawOperation) -> str:
    """A shell snippet that recreates an upload on the host (text shown, binaries summarised as a comment)."""
    content = op.content or b""
    target = f"{op.user + '@' if op.user else ''}{op.host}"
    port = f" -p {op.port}" if op.port and op.port != 22 else ""
    remote = upload_command(op.path or "", op.mode)
    if _is_text(content) and len(content) <= 64 * 1024:
        text = mask(content.decode("utf-8"))
        marker = heredoc_marker(text)
        return (
            f"ssh{port} {target} {_q(remote)} <<'{marker}'\n{text}{'' if text.endswith(chr(10)) else chr(10)}{marker}"
        )
    import hashlib

    digest = hashlib.sha256(content).hexdigest()
    return (
        f"# binary upload, {len(content)} bytes, sha256 {digest}, sent on stdin of:\n"
        f"#   ssh{port} {target} {_q(remote)} < LOCAL_FILE"
    )


def render_lines(op: RawOperation) -> list[str]:
    """The lines ``--explain`` prints for one operation (primary form first)."""
    if op.kind == "consul-http":
        lines = [curl(op)]
        cli = consul_cli(op)
        if cli:
            lines.append(f"# consul: {mask(cli)}")
        return lines
    if op.kind in ("ssh-exec", "ssh-upload"):
        return [ssh_line(op)]
    if op.kind in ("mdns", "dns"):
        return [mask(op.command or "")]
    return [mask(" ".join(_q(a) for a in (op.argv or [])))]


def outcome(op: RawOperation) -> str:
    """A short trailer: status, summary and timing (``dry-run: not sent`` in a dry run)."""
    if op.dry_run:
        return "dry-run: not sent"
    bits = []
    if op.status is not None:
        bits.append(str(op.status))
    if op.summary:
        bits.append(op.summary)
    if op.error:
        bits.append(f"error: {op.error}")
    if op.duration_ms is not None:
        bits.append(f"{op.duration_ms:.0f} ms")
    return mask(" · ".join(bits))


def _answers_true_or_false(op: RawOperation) -> bool:
    """KV writes with ``cas``/``acquire``/``release`` answer ``true`` or ``false`` with HTTP 200."""
    if not op.url:
        return False
    _base, path, params = _split_url(op.url)
    return path.startswith("/v1/kv/") and any(k in ("cas", "acquire", "release") for k, _ in params)


def script(operations: list[RawOperation], *, title: str, addr: str | None = None) -> str:
    """A runnable bash script performing ``operations`` (the ``--dry-run`` output).

    Reads are kept as comments (they planned the writes); writes are commands.
    Consul calls go to ``$CONSUL_HTTP_ADDR`` (defaulting to the address used).
    """
    lines = [
        "#!/usr/bin/env bash",
        f"# {mask(title)}",
        "# Generated by `foundation --dry-run`: the writes this command would perform.",
        "set -euo pipefail",
    ]
    if any(op.kind == "consul-http" for op in operations):
        default = _q(addr) if addr else DEFAULT_CONSUL_ADDRESS.url
        lines.append(f"CONSUL_HTTP_ADDR=${{CONSUL_HTTP_ADDR:-{default}}}")
        if any(op.token_used for op in operations):
            lines.append(': "${CONSUL_HTTP_TOKEN:?set CONSUL_HTTP_TOKEN}"')
    for op in operations:
        if not op.is_write:
            if op.kind == "consul-http":
                lines.append(f"# read: {curl(op)}  -> {outcome(op)}")
            else:
                lines.append(f"# read: {render_lines(op)[0]}")
            continue
        if op.kind == "consul-http":
            cli = consul_cli(op)
            if cli:
                lines.append(f"# consul: {mask(cli)}")
            if _answers_true_or_false(op):
                # A lost check-and-set or lock is HTTP 200 "false": make the script stop on it.
                lines.append(
                    f'[ "$({curl(op, addr_var=True)})" = true ] || '
                    '{ echo "check-and-set/lock refused: the state changed since this plan was made" >&2; exit 1; }'
                )
            else:
                lines.append(curl(op, addr_var=True) + " >/dev/null")
        elif op.kind == "ssh-upload":
            lines.append(upload_script(op))
        else:
            lines.extend(render_lines(op))
    return "\n".join(lines) + "\n"
