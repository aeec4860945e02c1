"""The one road to Consul: py-consul's ``requests`` client at its ``http_connect`` hook.

Every request any part of Foundation sends to Consul passes
:meth:`RecordingHTTPClient._send`, which, in this order:

1. adds the ACL token header (``X-Consul-Token``) when the client has one;
2. records the request as a :class:`RawOperation` (method, full URL, body,
   whether a token went along) — before any callback can raise, so failed
   requests are recorded too;
3. in a ``--dry-run`` withholds writes (answered with a placeholder; reads
   still go to Consul, they plan the writes), and in *plan* mode (what the node
   agents will send, for ``--explain``) withholds everything;
4. on "connection refused" / a connect timeout tries the other servers the
   cluster state lists, in order (each attempt recorded);
5. translates HTTP errors and py-consul's exceptions into Foundation's error
   tree (:mod:`foundation_cli.errors`) — once, here, for every caller.

The endpoint groups (:mod:`.kv`, :mod:`.session`, …) build paths and
parameters; this module knows nothing of them.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import consul
import consul.std
import requests
from consul.base import Response  # (code, headers, body): what every callback receives

from foundation_cli.errors import (
    ConflictError,
    FoundationError,
    NotFoundError,
    PermissionDeniedError,
    UnreachableError,
    UsageError,
)
from foundation_cli.raw.address import ConsulAddress
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import Recorder, current_recorder

ZERO_ID = "00000000-0000-0000-0000-000000000000"

# Placeholder answers for writes withheld by --dry-run, by path prefix.
_DRY_RUN_BODIES = (
    ("/v1/session/create", json.dumps({"ID": ZERO_ID})),
    ("/v1/event/fire/", json.dumps({"ID": ZERO_ID, "Name": "", "LTime": 0})),
    ("/v1/txn", json.dumps({"Results": [], "Errors": None})),
    ("/v1/kv/", "true"),
)

# Placeholder answers in plan mode (nothing is sent): the ids are shown as such.
PLAN_SESSION = "SESSION_ID"
_PLAN_BODIES = (
    ("/v1/session/create", json.dumps({"ID": PLAN_SESSION})),
    ("/v1/session/info/", json.dumps([{"ID": PLAN_SESSION}])),
    ("/v1/event/fire/", json.dumps({"ID": ZERO_ID, "Name": "", "LTime": 0})),
    ("/v1/txn", json.dumps({"Results": [], "Errors": None})),
)


def _summary(body: Any) -> str:
    if isinstance(body, bytes):
        return f"{len(body)} bytes"
    text = (body or "").strip()
    if len(text) <= 60 and "\n" not in text:
        return text
    return f"{len(text)} bytes"


def connection_reason(exc: Exception) -> str:
    """A short reason for a transport failure (``connection refused``, ``timed out`` …)."""
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("No route to host", "no route to host"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


def _may_fail_over(method: str, exc: Exception) -> bool:
    """Whether another server may be asked: never when a write may have reached this one."""
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ConnectTimeout)):
        if isinstance(exc, requests.exceptions.SSLError):
            return False  # the same certificate problem everywhere
        return not isinstance(exc, requests.exceptions.ReadTimeout)
    # A read that timed out after connecting: harmless to repeat elsewhere.
    return method == "GET" and isinstance(exc, requests.exceptions.Timeout)


def _body_text(response: Response) -> str:
    body = response.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return (body or "").strip()


def ascii_path(method: str, path: str) -> str:
    """``METHOD path`` for a message, non-ASCII characters escaped (a soft hyphen is invisible)."""
    return f"{method} {path.encode('ascii', 'backslashreplace').decode('ascii')}"


def raise_for_status(method: str, path: str, response: Response, *, allow_404: bool = True) -> None:
    """Consul's HTTP errors → Foundation's error tree (the one place this mapping lives)."""
    code = response.code
    if code < 400 or (code == 404 and allow_404):
        return
    text = _body_text(response).splitlines()[0] if _body_text(response) else ""
    where = ascii_path(method, path)
    if code == 403:  # Consul's reason tells an unknown token ("ACL not found") from a narrow one
        raise PermissionDeniedError(
            f"Consul refused {where}: permission denied (403{f': {text[:80]}' if text else ''})",
            hint="check the ACL token: --token or CONSUL_HTTP_TOKEN",
        )
    if code == 401:
        raise PermissionDeniedError(f"Consul ACLs are disabled or the request was unauthorized ({where}): {text}")
    if code == 404:
        raise NotFoundError(f"not found: {where}{f' ({text})' if text else ''}")
    if code == 400:
        raise UsageError(
            f"Consul rejected {where}: {text or '400 Bad Request, no reason given'}",
            hint=None
            if text
            else "Consul says 400 with no reason to a key or name it cannot store; check its characters",
        )
    if code == 409:
        raise ConflictError(f"Consul reported a conflict ({where}): {text}")
    if code == 500 and method != "GET" and any(m in text for m in _MAYBE_APPLIED):
        raise UnreachableError(
            f"Consul lost its leader while {where} was in flight: the write may or may not have been applied "
            f"({text[:80]})",
            hint="run the command again: Foundation's writes are check-and-set, so it lands once or says unchanged",
        )
    if code == 500 and (
        "No cluster leader" in text or _LEADER_CHANGE in text or any(m in text for m in _MAYBE_APPLIED)
    ):
        raise UnreachableError(
            f"Consul has no cluster leader right now ({where}: {text[:120]})",
            hint="servers may be electing a leader or have lost quorum; see `foundation status`",
        )
    raise FoundationError(f"Consul error ({where}): {code} {text}".rstrip())


# A server answers 500 with these while it has no leader to forward to (an election, or no quorum).
_LEADER_CHANGE = "rpc error getting client"  # could not even connect to the old leader: nothing was applied
_MAYBE_APPLIED = ("rpc error making call", "leadership lost", "raft is already shutdown")
ELECTION_WINDOW = 4.0  # the CLI retries leader-less answers this long (an election takes ~1–2 s; 5+ s with
# raft_multiplier 5). A server holds a request ~7 s when there is no quorum at all, so a command still
# fails in well under 15 s naming the cause.


def _leaderless(method: str, response: Response) -> bool:
    """A 500 that means "no leader right now" and that is safe to send again.

    Reads always; writes only when the answer proves the write never reached a leader
    (no leader at all, or no connection to it), so a repeat cannot apply it twice.
    """
    if response.code != 500:
        return False
    text = _body_text(response)
    if "No cluster leader" in text or _LEADER_CHANGE in text:
        return True
    return method == "GET" and any(m in text for m in _MAYBE_APPLIED)


def _translate(exc: Exception, method: str, path: str) -> FoundationError:
    """A py-consul exception (raised by one of its callbacks) → the same errors as :func:`raise_for_status`."""
    text = str(exc).strip()
    if isinstance(exc, consul.ACLPermissionDenied):
        code, body = 403, text
    elif isinstance(exc, consul.ACLDisabled):
        code, body = 401, text
    elif isinstance(exc, consul.NotFound):
        code, body = 404, text
    else:
        head, _, rest = text.partition(" ")
        code, body = (int(head), rest) if head.isdigit() else (0, text)
    if code:
        try:
            raise_for_status(method, path, Response(code, {}, body), allow_404=False)
        except FoundationError as err:
            return err
    return FoundationError(f"Consul error ({method} {path}): {text.splitlines()[0] if text else type(exc).__name__}")


# -- callbacks: parse an answer (errors were raised already) ------------------------------------


def as_json(response: Response) -> Any:
    """The decoded JSON body (``None`` for an empty body or a 404)."""
    if response.code == 404:
        return None
    text = response.body.decode("utf-8", "replace") if isinstance(response.body, bytes) else response.body
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise FoundationError(f"Consul answered something that is not JSON: {text[:80]!r}") from None


def as_bool(response: Response) -> bool:
    """``true``/``false`` answers (KV writes, CAS, locks), else whether it was a 200."""
    text = _body_text(response)
    if text in ("true", "false"):
        return text == "true"
    return response.code == 200


def index_of(response: Response) -> str | None:
    """``X-Consul-Index`` (what the next blocking query waits on)."""
    headers = response.headers or {}
    return headers.get("X-Consul-Index")


def decode_values(items: Any, field: str) -> Any:
    """Base64 ``field`` of each item → bytes (KV ``Value``, event ``Payload``), as py-consul does."""
    for item in items or []:
        if isinstance(item, dict) and item.get(field) is not None:
            item[field] = base64.b64decode(item[field])
    return items


@dataclass
class Reply:
    """A response kept whole: status, headers, decoded JSON body (text when not JSON)."""

    status: int
    headers: dict[str, str]
    body: Any
    operation: RawOperation | None = None  # the request as recorded (what was sent, and where)

    @property
    def index(self) -> int | None:
        value = self.headers.get("X-Consul-Index")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None


def as_reply(response: Response) -> Reply:
    """The whole answer, body decoded (JSON, else text)."""
    text = response.body
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    body: Any = None
    if text:
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    return Reply(response.code, dict(response.headers or {}), body)


class _Leaderless(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.code)
        self.response = response


class RecordingHTTPClient(consul.std.HTTPClient):
    """py-consul's requests client with recording, token, dry run/plan, failover and error translation."""

    def __init__(
        self,
        address: ConsulAddress,
        *,
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
        timeout: float | None = 10.0,
        recorder: Recorder | None = None,
        fallbacks: Sequence[ConsulAddress] = (),
        plan: bool = False,
    ) -> None:
        super().__init__(address.host, address.port, address.scheme, verify, cert, connections_timeout=timeout)
        self.address = address
        self.base_uri = address.url
        self.recorder = recorder
        self.token: str | None = None
        self.fallbacks = [a for a in fallbacks if a != address]
        self.plan = plan
        self.last_operation: RawOperation | None = None  # per client: one client per thread
        self.election_window = 0.0  # > 0: ride through a leader election (see _leaderless); the CLI's clients

    def _recorder(self) -> Recorder:
        return self.recorder or current_recorder()

    def uri_at(self, address: ConsulAddress, path: str, params=None) -> str:
        uri = address.url + urllib.parse.quote(path, safe="/:")
        if params:
            uri = f"{uri}?{urllib.parse.urlencode(params)}"
        return uri

    def _withheld(self, op: RawOperation, recorder: Recorder, callback, path: str, bodies, summary: str):
        op.dry_run = True
        op.finish(summary=summary)
        recorder.add(op)
        self.last_operation = op
        reply = next((b for prefix, b in bodies if path.startswith(prefix)), "true")
        return callback(Response(200, {"X-Consul-Index": "0"}, reply))

    def _send(self, method: str, callback, path, params=None, data=None, headers=None, raw=False):
        """Send once; while ``election_window`` lasts, again after a leader-less answer (backoff 0.1 s … 1 s)."""
        started, delay = time.monotonic(), 0.1
        while True:
            try:
                return self._send_once(method, callback, path, params, data, headers, raw)
            except _Leaderless as exc:
                if time.monotonic() - started + delay > self.election_window:
                    return self._answer(callback, method, path, exc.response)
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _send_once(self, method: str, callback, path, params=None, data=None, headers=None, raw=False):
        headers = dict(headers or {})
        if self.token and not headers.get("X-Consul-Token"):
            headers["X-Consul-Token"] = self.token
        body = data.encode("utf-8") if isinstance(data, str) else (data or None)
        token_used = bool(headers.get("X-Consul-Token")) or bool(
            params and any(k == "token" for k, _ in (params if isinstance(params, list) else params.items()))
        )
        recorder = self._recorder()

        def operation(address: ConsulAddress) -> RawOperation:
            url = self.uri_at(address, path, params)
            cacert = self.verify if isinstance(self.verify, str) and url.startswith("https:") else None
            return RawOperation(
                kind="consul-http", method=method, url=url, body=body or None, token_used=token_used, cacert=cacert
            )

        if self.plan:
            return self._withheld(operation(self.address), recorder, callback, path, _PLAN_BODIES, "not sent (plan)")
        if recorder.dry_run and method != "GET":
            return self._withheld(
                operation(self.address), recorder, callback, path, _DRY_RUN_BODIES, "not sent (dry run)"
            )
        tried: list[str] = []
        addresses = [self.address, *self.fallbacks]
        for n, address in enumerate(addresses):
            op = recorder.begin(operation(address))  # --explain shows operations in the order they were sent
            try:
                resp = self.session.request(
                    method,
                    op.url,
                    headers=headers or None,
                    data=data if method != "GET" else None,
                    verify=self.verify,
                    cert=self.cert,
                    timeout=self.timeout(params),
                )
            except requests.exceptions.RequestException as exc:
                reason = connection_reason(exc)
                op.finish(error=reason)
                recorder.add(op)
                tried.append(f"{address} ({reason})")
                if n + 1 < len(addresses) and _may_fail_over(method, exc):
                    continue
                raise self._unreachable(tried, reason) from None
            if n:  # this server answered: later requests go to it first
                self._switch_to(address)
            response = self.response(resp, raw=raw)
            op.finish(status=response.code, summary=_summary(response.body))
            recorder.add(op)
            self.last_operation = op
            if self.election_window and _leaderless(method, response):
                raise _Leaderless(response)
            return self._answer(callback, method, path, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, callback, method: str, path: str, response: Response):
        try:
            return callback(response)
        except FoundationError:
            raise
        except consul.base.ConsulException as exc:
            raise _translate(exc, method, path) from exc

    def _unreachable(self, tried: list[str], reason: str) -> UnreachableError:
        hint = "try `foundation up` (or `foundation up --local`), or set --consul-addr / CONSUL_HTTP_ADDR"
        if len(tried) == 1:
            return UnreachableError(
                f"cannot reach Consul at {self.address}: {reason} — is the agent running?", hint=hint
            )
        return UnreachableError(f"cannot reach Consul at any server: {', '.join(tried)}", hint=hint)

    def _switch_to(self, address: ConsulAddress) -> None:
        others = [a for a in [self.address, *self.fallbacks] if a != address]
        self.address, self.fallbacks = address, others
        self.host, self.port, self.scheme, self.base_uri = address.host, address.port, address.scheme, address.url

    # py-consul's HTTPClient interface (its endpoint classes call these).
    def get(self, callback, path, params=None, headers=None, raw=False):
        return self._send("GET", callback, path, params, headers=headers, raw=raw)

    def put(self, callback, path, params=None, data="", headers=None):
        return self._send("PUT", callback, path, params, data=data, headers=headers)

    def delete(self, callback, path, params=None, data="", headers=None):
        return self._send("DELETE", callback, path, params, data=data, headers=headers)

    def post(self, callback, path, params=None, data="", headers=None):
        return self._send("POST", callback, path, params, data=data, headers=headers)


Callback = Callable[[Response], Any]
