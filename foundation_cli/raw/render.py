"""The one renderer for raw operations: curl lines, ``consul`` CLI equivalents, ssh/scp lines, scripts.

Everything printed passes through :func:`foundation_cli.raw.secrets.mask`.
The token is never rendered: curl lines send ``"$CONSUL_HTTP_TOKEN"``.
"""

from __future__ import annotations

import re
import shlex
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from foundation_cli.raw.address import DEFAULT_CONSUL_ADDRESS
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.secrets import mask
from foundation_cli.raw.secrets import spans as secret_spans

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
    # A leading '-' would make the format look like an option to printf: write it as an escape.
    escaped = "".join("%%" if b == 0x25 else _octal(b) for b in data)
    return "printf '" + ("\\055" + escaped[1:] if escaped.startswith("-") else escaped) + "'"


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
    if op.cacert:
        parts.append(f"--cacert {shlex.quote(op.cacert)}")
    parts.append(f'"{url}"' if addr_var else shlex.quote(url))
    return mask(prefix + " ".join(parts) + body)


def _q(value: str) -> str:
    return shlex.quote(value)


@dataclass(frozen=True)
class Equivalent:
    """One row of the ``# consul:`` table: a request shape and the consul CLI line doing the same.

    ``path`` ends with ``/`` when it is a prefix (the rest is a key, a name, an id).
    ``params``: the query parameters the CLI line can express; a request carrying any other
    (a blocking ``index``, ``consistent``, ``wan`` …) has no equivalent — a near miss is not shown.
    Each row is checked against a real Consul (tests/integration/test_equivalents.py).
    """

    name: str
    method: str
    path: str
    params: frozenset[str]
    build: Callable[[str, dict[str, str], bytes, str], str | None]  # (rest of path, params, body, common flags)

    def matches(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        return (
            path.startswith(self.path) and len(path) > len(self.path) if self.path.endswith("/") else path == self.path
        )


_COMMON = frozenset({"dc", "stale"})


def _common_flags(params: dict[str, str]) -> str:
    flags = [f"-datacenter={_q(params['dc'])}"] if "dc" in params else []
    if "stale" in params:
        flags.append("-stale")
    return "".join(" " + flag for flag in flags)


def _word(value: str) -> str | None:
    """A positional argument the consul CLI reads as such (its flag parser takes a leading '-')."""
    return None if value.startswith("-") else _q(value)


def _kv_get(key: str, params: dict[str, str], body: bytes, f: str) -> str | None:
    if "keys" in params:
        sep = f" -separator={_q(params['separator'])}" if "separator" in params else ""
        return f"consul kv get{f} -keys{sep} {_q(key)}"
    if "separator" in params or key.startswith("-"):
        return None
    if "recurse" in params:
        return f"consul kv get{f} -recurse {_q(key)}"
    return f"consul kv get{f} -detailed {_q(key)}"


def _kv_put(key: str, params: dict[str, str], body: bytes, f: str) -> str | None:
    if key.startswith("-") or ("acquire" in params and "release" in params):
        return None
    extra = []
    if "cas" in params:
        if not params["cas"].isdigit() or int(params["cas"]) == 0:
            return None  # ?cas=0 (only if absent): consul kv put refuses -modify-index=0 ("Must specify")
        extra.append(f"-cas -modify-index={params['cas']}")
    if "flags" in params:
        extra.append(f"-flags={_q(params['flags'])}")
    if "acquire" in params:
        extra.append(f"-acquire -session={_q(params['acquire'])}")
    if "release" in params:
        extra.append(f"-release -session={_q(params['release'])}")
    x = "".join(" " + e for e in extra)
    if _is_text(body) and not body.startswith((b"@", b"-")):
        return f"consul kv put{f}{x} {_q(key)} {_q(body.decode('utf-8'))}"
    return f"{printf_bytes(body)} | consul kv put{f}{x} {_q(key)} -"


def _kv_delete(key: str, params: dict[str, str], body: bytes, f: str) -> str | None:
    if key.startswith("-") or ("cas" in params and "recurse" in params):
        return None
    extra = " -recurse" if "recurse" in params else ""
    if "cas" in params:
        if not params["cas"].isdigit() or int(params["cas"]) == 0:
            return None
        extra += f" -cas -modify-index={params['cas']}"
    return f"consul kv delete{f}{extra} {_q(key)}"


def _event_fire(name: str, params: dict[str, str], body: bytes, f: str) -> str | None:
    filters = "".join(f" -{p}={_q(params[p])}" for p in ("node", "service", "tag") if p in params)
    if not body:
        return f"consul event{f} -name={_q(name)}{filters}"
    if not _is_text(body) or body.startswith(b"-"):
        return None  # a payload the command line cannot carry as it is
    return f"consul event{f} -name={_q(name)}{filters} {_q(body.decode('utf-8'))}"


def _event_list(_rest: str, params: dict[str, str], body: bytes, f: str) -> str | None:
    name = f" -name={_q(params['name'])}" if "name" in params else ""
    return f"consul watch -type=event{name}"  # no handler: prints the same JSON once and exits


def _fixed(line: str) -> Callable[[str, dict[str, str], bytes, str], str | None]:
    return lambda _rest, _params, _body, f: line + f


def _with_arg(fmt: str) -> Callable[[str, dict[str, str], bytes, str], str | None]:
    def build(rest: str, _params: dict[str, str], _body: bytes, f: str) -> str | None:
        word = _word(rest)
        return None if word is None or "/" in rest else fmt.format(word) + f

    return build


_AUTOPILOT_FLAGS = {
    "CleanupDeadServers": "cleanup-dead-servers",
    "LastContactThreshold": "last-contact-threshold",
    "MaxTrailingLogs": "max-trailing-logs",
    "MinQuorum": "min-quorum",
    "ServerStabilizationTime": "server-stabilization-time",
    "RedundancyZoneTag": "redundancy-zone-tag",
    "DisableUpgradeMigration": "disable-upgrade-migration",
    "UpgradeVersionTag": "upgrade-version-tag",
}


def _autopilot_set(_rest: str, params: dict[str, str], body: bytes, f: str) -> str | None:
    """Only a whole configuration: the PUT replaces it all, set-config changes just the flags given."""
    import json

    try:
        conf = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(conf, dict) or set(conf) - {"CreateIndex", "ModifyIndex"} != set(_AUTOPILOT_FLAGS):
        return None
    flags = []
    for key, flag in _AUTOPILOT_FLAGS.items():
        value = conf[key]
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, int) and key in ("LastContactThreshold", "ServerStabilizationTime"):
            value = f"{value // 1_000_000}ms" if value % 1_000_000 == 0 else f"{value}ns"
        flags.append(f"-{flag}={_q(str(value))}")
    return f"consul operator autopilot set-config{f} " + " ".join(flags)


# Every `# consul:` line Foundation can print comes from this table (and nothing else).
EQUIVALENTS: tuple[Equivalent, ...] = (
    Equivalent("kv-get", "GET", "/v1/kv/", _COMMON | {"recurse", "keys", "separator"}, _kv_get),
    Equivalent("kv-put", "PUT", "/v1/kv/", frozenset({"dc", "cas", "flags", "acquire", "release"}), _kv_put),
    Equivalent("kv-delete", "DELETE", "/v1/kv/", frozenset({"dc", "recurse", "cas"}), _kv_delete),
    Equivalent("event-fire", "PUT", "/v1/event/fire/", frozenset({"dc", "node", "service", "tag"}), _event_fire),
    Equivalent("event-list", "GET", "/v1/event/list", frozenset({"name"}), _event_list),
    Equivalent("members", "GET", "/v1/agent/members", frozenset(), _fixed("consul members -detailed")),
    Equivalent("catalog-services", "GET", "/v1/catalog/services", _COMMON, _fixed("consul catalog services -tags")),
    Equivalent("catalog-nodes", "GET", "/v1/catalog/nodes", _COMMON, _fixed("consul catalog nodes -detailed")),
    Equivalent(
        "catalog-datacenters", "GET", "/v1/catalog/datacenters", frozenset(), _fixed("consul catalog datacenters")
    ),
    Equivalent(
        "raft-list-peers", "GET", "/v1/operator/raft/configuration", _COMMON, _fixed("consul operator raft list-peers")
    ),
    Equivalent(
        "autopilot-get",
        "GET",
        "/v1/operator/autopilot/configuration",
        _COMMON,
        _fixed("consul operator autopilot get-config"),
    ),
    Equivalent("autopilot-set", "PUT", "/v1/operator/autopilot/configuration", frozenset({"dc"}), _autopilot_set),
    Equivalent("leave", "PUT", "/v1/agent/leave", frozenset(), _fixed("consul leave")),
    Equivalent("reload", "PUT", "/v1/agent/reload", frozenset(), _fixed("consul reload")),
    Equivalent("force-leave", "PUT", "/v1/agent/force-leave/", frozenset(), _with_arg("consul force-leave {}")),
    Equivalent("join", "PUT", "/v1/agent/join/", frozenset(), _with_arg("consul join {}")),
    Equivalent(
        "service-deregister",
        "PUT",
        "/v1/agent/service/deregister/",
        frozenset(),
        _with_arg("consul services deregister -id={}"),
    ),
)


def consul_cli(op: RawOperation) -> str | None:
    """The ``consul`` CLI command doing what ``op`` does (:data:`EQUIVALENTS`); ``None`` where none does.

    Not for: blocking queries (``?index=``), parameters the CLI cannot express, payloads or keys
    a command line cannot carry as they are, and endpoints with no CLI equivalent at all
    (``/v1/agent/metrics``, ``/v1/agent/self``, ``/v1/health/…``, sessions …).
    """
    if op.kind != "consul-http" or not op.url:
        return None
    _base, path, plist = _split_url(op.url)
    params = {k: v for k, v in plist if k != "token"}
    if len(params) != len([k for k, _ in plist if k != "token"]):
        return None  # a repeated parameter
    method = (op.method or "GET").upper()
    for row in EQUIVALENTS:
        if row.matches(method, path):
            if set(params) - row.params:
                return None
            rest = path[len(row.path) :] if row.path.endswith("/") else ""
            f = _common_flags({k: v for k, v in params.items() if k in _COMMON})
            line = row.build(rest, params, op.body or b"", f)
            return mask(line) if line else None
    return None


def _ssh_head(op: RawOperation) -> str:
    target = f"{op.user + '@' if op.user else ''}{op.host}"
    return f"ssh{_port_flag(op)} {target}"


def remote_script(command: str) -> str | None:
    """The script a remote command runs, when a block shows it better than one quoted line.

    ``sh -c SCRIPT`` (exactly ``sh -c`` + one quoted word): SCRIPT, when it spans lines or holds
    quotes. Any other command holding a quote or a newline (one line would nest quotes): the
    command itself, which the login shell would run as ``sh -c`` runs it (Foundation sends POSIX
    sh). Else ``None``: the one-line form is readable as it is.
    """
    if command.startswith("sh -c "):
        try:
            words = shlex.split(command)
        except ValueError:
            words = []
        if len(words) == 3 and command == f"sh -c {_q(words[2])}":
            script = words[2]
            return script if ("\n" in script or "'" in script) else None
    return command if ("\n" in command or "'" in command) else None


def ssh_block(op: RawOperation, refs: SecretRefs | None = None) -> list[str] | None:
    """A remote script (:func:`remote_script`) as a readable heredoc that runs as shown when pasted.

    ``ssh HOST 'sh -c "$(cat)" </dev/null' <<'MARKER'`` + the script + ``MARKER``: the remote
    shell reads the script from the heredoc (``$(cat)`` is expanded before the redirection) and
    runs it with ``sh -c`` and an empty stdin, as Foundation ran it. The marker is random and
    checked against every line (:func:`heredoc_marker`). ``None`` when the operation has no such
    script, or sends data on stdin (then the heredoc cannot carry the script).

    With ``refs`` (a dry-run script) secrets become ``${FOUNDATION_SECRET_N}`` references (an
    unquoted heredoc with the rest escaped, :meth:`SecretRefs.heredoc_body`); without, masked.
    """
    if op.kind != "ssh-exec" or op.stdin_desc or not op.command:
        return None
    script = remote_script(op.command)
    if script is None:
        return None
    script = script[:-1] if script.endswith("\n") else script
    if refs is None:
        text, quoted, head = mask(script), True, _ssh_head(op)
    else:
        (text, quoted), head = refs.heredoc_body(script), f"ssh{_port_flag(op)} {_q(_target(op))}"
    marker = heredoc_marker(text)
    opener = f"'{marker}'" if quoted else marker
    return [f"{head} 'sh -c \"$(cat)\" </dev/null' <<{opener}", *text.split("\n"), marker]


def ssh_line(op: RawOperation) -> str:
    """``ssh``/``scp``-style line for ssh-exec and ssh-upload operations."""
    target = f"{op.user + '@' if op.user else ''}{op.host}"
    if op.kind == "ssh-exec":
        stdin = f"  # stdin: {op.stdin_desc}" if op.stdin_desc else ""
        return mask(f"{_ssh_head(op)} {_q(op.command or '')}{stdin}")
    assert op.kind == "ssh-upload"
    size = len(op.content or b"")
    mode = f" (mode {op.mode:o})" if op.mode is not None else ""
    return mask(f"# upload {size} bytes to {target}:{op.path}{mode}")


def upload_command(path: str, mode: int | None, size: int | None = None) -> str:
    """The remote command an ssh-upload runs, content on stdin (the SSH adapter sends exactly this)."""
    import posixpath

    # The temporary file is private from its first byte (umask 077 in a subshell, after removing a
    # leftover that could keep a looser mode), gets its final mode, then replaces the target at once:
    # a secret is never readable by others, not even between the write and the chmod.
    # ``size``: a connection lost half-way is end-of-input to `cat` on the host, which then installed
    # a truncated file (seen in the lab); only a file of exactly that size replaces the target, and a
    # failed upload leaves no temporary file behind.
    tmp = _q(path + ".foundation-tmp")
    check = f" && [ $(wc -c < {tmp}) -eq {int(size)} ]" if size is not None else ""
    chmod = f" && chmod {mode:o} {tmp}" if mode is not None else ""
    return (
        f"mkdir -p {_q(posixpath.dirname(path) or '/')} && rm -f {tmp} && {{ (umask 077 && cat > {tmp})"
        f"{check}{chmod} && mv -f {tmp} {_q(path)} || {{ rm -f {tmp}; false; }}; }}"
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


def upload_script(op: RawOperation, refs: SecretRefs | None = None) -> str:
    """A shell snippet that recreates an upload on the host (text shown, binaries summarised as a comment).

    With ``refs`` (a dry-run script), secrets in the content become ``${FOUNDATION_SECRET_N}``
    references in an unquoted heredoc whose other ``$``, backquotes and backslashes are escaped, so
    the host gets the same bytes; without, the content is masked (for display only).
    """
    content = op.content or b""
    head = f"ssh{_port_flag(op)} {_q(_target(op))} {_q(upload_command(op.path or '', op.mode, len(content)))}"
    if _is_text(content) and len(content) <= 64 * 1024:
        text = content.decode("utf-8")
        if refs is None:
            text = mask(text)
        elif not text.endswith("\n"):  # a heredoc always ends in a newline: send the exact bytes instead
            return f"printf '%s' {refs.word(text)} | {head}"
        body, quoted = (text, True) if refs is None else refs.heredoc_body(text)
        marker = heredoc_marker(body)
        opener = f"'{marker}'" if quoted else marker
        return f"{head} <<{opener}\n{body}{'' if body.endswith(chr(10)) else chr(10)}{marker}"
    if refs is not None and len(content) <= 64 * 1024:  # small binary: the exact bytes through printf
        return f"{refs.bytes_producer(content)} | {head}"
    import hashlib

    digest = hashlib.sha256(content).hexdigest()
    return comment(
        f"binary upload, {len(content)} bytes, sha256 {digest}, sent on stdin of:\n  {mask(head)} < LOCAL_FILE"
    )


def _target(op: RawOperation) -> str:
    return f"{op.user + '@' if op.user else ''}{op.host}"


def _port_flag(op: RawOperation) -> str:
    """``-J bastion`` (ProxyJump) and ``-p PORT`` when they are not the defaults."""
    jump = f" -J {_q(op.proxy_jump)}" if op.proxy_jump else ""
    return jump + (f" -p {int(op.port)}" if op.port and op.port != 22 else "")


def render_lines(op: RawOperation) -> list[str]:
    """The lines ``--explain`` prints for one operation (primary form first).

    Values come from keys, hosts and events: the ``# consul:`` equivalent is a comment on every
    line it spans, and control characters but newline and tab are shown as ``\\xNN`` (a terminal
    never plays an escape sequence that was in a value).
    """
    from foundation_cli.raw.text import printable

    if op.kind == "consul-http":
        lines = [curl(op)]
        cli = consul_cli(op)
        if cli:
            lines.append(comment(f"consul: {mask(cli)}"))
    elif op.kind in ("ssh-exec", "ssh-upload"):
        lines = ssh_block(op) or [ssh_line(op)]
    elif op.kind in ("mdns", "dns"):
        lines = [mask(op.command or "")]
    else:
        lines = [mask(" ".join(_q(a) for a in (op.argv or [])))]
    return [printable(line) for line in lines]


def explain_block(op: RawOperation, *, styles: tuple[str, str, str] = ("", "", "")) -> str:
    """What ``--explain`` prints for one operation, as one piece of text.

    ``$ request`` (a remote script's heredoc lines follow verbatim, so the block still pastes),
    then ``  # consul: equivalent`` where there is one, then ``  ↳ result``. ``styles`` is
    (request, detail, reset) colour codes.
    """
    lead, dim, reset = styles
    lines = render_lines(op)
    if op.kind == "consul-http":
        head, details = lines[:1], lines[1:]
    else:
        head, details = lines, []
    out = [f"{lead}$ {head[0]}{reset}", *(f"{lead}{line}{reset}" for line in head[1:])]
    out += [f"{dim}  {line}{reset}" for line in details]
    out.append(f"{dim}  ↳ {outcome(op)}{reset}")
    return "\n".join(out) + "\n"


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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def comment(text: str) -> str:
    """``text`` as bash comment lines: every line prefixed with ``#``, control characters escaped.

    Whatever the text holds (a newline in a key, a value, an argv word), no line of it is live.
    """
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return "\n".join("#" + (" " + line if line else "") for line in text.split("\n"))


class SecretRefs:
    """Secrets met while writing a dry-run script, each replaced by a ``${FOUNDATION_SECRET_N}`` reference.

    The script asks for each variable at its top (``: "${FOUNDATION_SECRET_1:?…}"``), so replaying it
    stores the real value without the script ever holding it. What counts as a secret is what
    :func:`foundation_cli.raw.secrets.spans` finds (registered secrets and secret-shaped values).
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def name(self, secret: str) -> str:
        if secret not in self.names:
            self.names[secret] = f"FOUNDATION_SECRET_{len(self.names) + 1}"
        return self.names[secret]

    def _pieces(self, text: str) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        last = 0
        for start, end in secret_spans(text):
            if start > last:
                out.append((text[last:start], False))
            out.append((text[start:end], True))
            last = end
        if last < len(text) or not out:
            out.append((text[last:], False))
        return out

    def word(self, text: str) -> str:
        """One bash word expanding to ``text``: literal parts single-quoted, secrets as ``"${NAME}"``."""
        return "".join(f'"${{{self.name(p)}}}"' if secret else _q(p) for p, secret in self._pieces(text))

    def bytes_producer(self, data: bytes) -> str:
        """A command writing exactly ``data`` to stdout (NUL and non-UTF-8 included), secrets as references."""
        if _is_text(data):
            return f"printf '%s' {self.word(data.decode('utf-8'))}"
        text = data.decode("latin-1")  # one character per byte: spans map to bytes
        parts = []
        for piece, secret in self._pieces(text):
            if secret:
                # a secret found in binary data: the variable holds its bytes as text (latin-1 -> UTF-8 would differ)
                parts.append(f"printf '%s' \"${{{self.name(piece)}}}\"")
            elif piece:
                parts.append(printf_bytes(piece.encode("latin-1")))
        return parts[0] if len(parts) == 1 else "{ " + "; ".join(parts) + "; }"

    def heredoc_body(self, text: str) -> tuple[str, bool]:
        """(body, quoted): the text as is for a quoted heredoc, or escaped with references when it holds secrets."""
        pieces = self._pieces(text)
        if not any(secret for _, secret in pieces):
            return text, True
        body = "".join(f"${{{self.name(p)}}}" if secret else re.sub(r"([\\$`])", r"\\\1", p) for p, secret in pieces)
        return body, False

    def header(self) -> list[str]:
        """The lines asking for every variable (fixed text: nothing from the values or keys).

        Set in the environment, or typed without echo when the script runs on a terminal
        (``read -rs``); otherwise the script stops before it sends anything.
        """
        lines = []
        for i, name in enumerate(self.names.values(), 1):
            lines.append(
                f'[ -n "${{{name}+x}}" ] || ! [ -t 0 ] || '
                f"{{ read -rsp '{name} (secret {i} of this script): ' {name}; echo >&2; }}"
            )
            lines.append(f': "${{{name}:?set {name}: secret {i} of this script, masked in its comments}}"')
        return lines


def _script_curl(op: RawOperation, refs: SecretRefs) -> str:
    """The curl line of a write in a dry-run script: address from ``$CONSUL_HTTP_ADDR``, every value quoted."""
    base, _path, params = _split_url(op.url or "")
    params = [(k, v) for k, v in params if k != "token"]
    path_and_query = (op.url or "")[len(base) :].split("?", 1)[0]
    if params:
        path_and_query += "?" + urllib.parse.urlencode(params)
    parts = ["curl -sS --fail-with-body"]
    method = (op.method or "GET").upper()
    if method != "GET":
        parts.append(f"-X {_q(method)}")
    if op.token_used:
        parts.append(TOKEN_HEADER)
    where = refs.word(path_and_query)
    # A path of only shell-safe characters ([\w@%+=:,./-], nothing special in double quotes) stays inside them.
    parts.append(f'"${{CONSUL_HTTP_ADDR}}{where}"' if where == path_and_query else '"${CONSUL_HTTP_ADDR}"' + where)
    body = op.body or b""
    if not body:
        return " ".join(parts)
    if _is_text(body) and not body.startswith(b"@"):
        return " ".join(parts) + " --data-binary " + refs.word(body.decode("utf-8"))
    return f"{refs.bytes_producer(body)} | " + " ".join(parts) + " --data-binary @-"


def _ssh_exec_script(op: RawOperation, refs: SecretRefs) -> str:
    """An ssh-exec write in a dry-run script: target and command quoted, secrets as references."""
    block = ssh_block(op, refs)  # a multi-line remote script: a readable heredoc
    if block:
        return "\n".join(block)
    stdin = f"  {comment('stdin: ' + op.stdin_desc)}" if op.stdin_desc else ""
    return f"ssh{_port_flag(op)} {_q(_target(op))} {refs.word(op.command or '')}{stdin}"


def script(
    operations: list[RawOperation], *, title: str, addr: str | None = None, refs: SecretRefs | None = None
) -> str:
    """A runnable bash script performing ``operations`` (the ``--dry-run`` output).

    Reads are kept as comments (they planned the writes); writes are commands.
    Consul calls go to ``$CONSUL_HTTP_ADDR`` (defaulting to the address used).

    Inert against any value: every comment line is prefixed (a newline in a key, value or argv
    cannot start a live line), every value in a live line is a single-quoted word, heredoc
    markers are random and checked against the content, and secrets are ``${FOUNDATION_SECRET_N}``
    references the script asks for at its top, so replaying it stores the real value (pass
    ``refs`` to learn which variable stands for which secret).
    """
    refs = refs if refs is not None else SecretRefs()
    body: list[str] = []
    for op in operations:
        if not op.is_write:
            if op.kind == "consul-http":
                body.append(comment(f"read: {curl(op)}  -> {outcome(op)}"))
            else:
                first, *rest = render_lines(op)
                body.append(comment(f"read: {first}"))
                body.extend(comment(f"  {line}") for line in rest)  # a remote script's lines stay comments
            continue
        if op.kind == "consul-http":
            cli = consul_cli(op)
            if cli:
                body.append(comment(f"consul: {mask(cli)}"))
            if _answers_true_or_false(op):
                # A lost check-and-set or lock is HTTP 200 "false": make the script stop on it.
                body.append(
                    f'[ "$({_script_curl(op, refs)})" = true ] || '
                    '{ echo "check-and-set/lock refused: the state changed since this plan was made" >&2; exit 1; }'
                )
            else:
                body.append(_script_curl(op, refs) + " >/dev/null")
        elif op.kind == "ssh-upload":
            body.append(upload_script(op, refs))
        elif op.kind == "ssh-exec":
            body.append(_ssh_exec_script(op, refs))
        elif op.kind == "local-process":
            body.append(" ".join(refs.word(a) for a in (op.argv or [])))
        else:  # mDNS announcements last as long as the announcing process: shown, not replayed
            body.append(comment(f"{op.kind} {op.method or ''} (not replayed by this script): {mask(op.command or '')}"))
    lines = [
        "#!/usr/bin/env bash",
        comment(mask(title)),
        "# Generated by `foundation --dry-run`: the writes this command would perform.",
        "set -euo pipefail",
    ]
    if any(op.kind == "consul-http" for op in operations):
        default = _q(addr) if addr else DEFAULT_CONSUL_ADDRESS.url
        lines.append(f"CONSUL_HTTP_ADDR=${{CONSUL_HTTP_ADDR:-{default}}}")
        if any(op.token_used for op in operations):
            lines.append(': "${CONSUL_HTTP_TOKEN:?set CONSUL_HTTP_TOKEN}"')
    lines.extend(refs.header())
    return "\n".join(lines + body) + "\n"
