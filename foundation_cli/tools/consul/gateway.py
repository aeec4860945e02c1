"""Consul adapter: py-consul with a recording HTTP client.

Every request py-consul sends passes :class:`RecordingHTTPClient`, which
records it (method, full URL, body, whether a token went along) before the
response callback can raise, so failed requests are recorded too. In a dry
run, writes stop here: they are recorded and answered with a placeholder, and
reads still go to Consul (they plan the writes).
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import consul
import consul.std
import requests
from consul import base

from foundation_cli.errors import (
    ConflictError,
    FoundationError,
    NotFoundError,
    PermissionDeniedError,
    UnreachableError,
    UsageError,
)
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import Recorder, current_recorder
from foundation_cli.settings import Settings

# Placeholder answers for writes withheld by --dry-run, by path prefix.
_DRY_RUN_BODIES = (
    ("/v1/session/create", json.dumps({"ID": "00000000-0000-0000-0000-000000000000"})),
    ("/v1/event/fire/", json.dumps({"ID": "00000000-0000-0000-0000-000000000000", "Name": "", "LTime": 0})),
    ("/v1/txn", json.dumps({"Results": [], "Errors": None})),
    ("/v1/kv/", "true"),
)


def _summary(status: int, body: Any) -> str:
    if isinstance(body, bytes):
        return f"{len(body)} bytes"
    text = (body or "").strip()
    if len(text) <= 60 and "\n" not in text:
        return text
    return f"{len(text)} bytes"


class RecordingHTTPClient(consul.std.HTTPClient):
    """py-consul's requests client, recording each request as a :class:`RawOperation`."""

    recorder: Recorder | None = None

    def _recorder(self) -> Recorder:
        return self.recorder or current_recorder()

    def _send(self, method: str, callback, path, params=None, data=None, headers=None, raw=False):
        uri = self.uri(path, params)
        body = data.encode("utf-8") if isinstance(data, str) else (data or None)
        token_used = bool(headers and headers.get("X-Consul-Token")) or bool(
            params and any(k == "token" for k, _ in (params if isinstance(params, list) else params.items()))
        )
        op = RawOperation(kind="consul-http", method=method, url=uri, body=body or None, token_used=token_used)
        recorder = self._recorder()
        if recorder.dry_run and method != "GET":
            op.dry_run = True
            op.finish(summary="not sent (dry run)")
            recorder.add(op)
            reply = next((b for prefix, b in _DRY_RUN_BODIES if path.startswith(prefix)), "true")
            return callback(base.Response(200, {}, reply))
        try:
            resp = self.session.request(
                method,
                uri,
                headers=headers,
                data=data if method != "GET" else None,
                verify=self.verify,
                cert=self.cert,
                timeout=self.timeout(params),
            )
        except requests.exceptions.RequestException as exc:
            reason = _connection_reason(exc)
            op.finish(error=reason)
            recorder.add(op)
            raise UnreachableError(
                f"cannot reach Consul at {self.base_uri}: {reason} — is the agent running?",
                hint="try `foundation up` (or `foundation up --local`), or set --consul-addr / CONSUL_HTTP_ADDR",
            ) from None
        response = self.response(resp, raw=raw)
        op.finish(status=response.code, summary=_summary(response.code, response.body))
        recorder.add(op)
        return callback(response)

    def get(self, callback, path, params=None, headers=None, raw=False):
        return self._send("GET", callback, path, params, headers=headers, raw=raw)

    def put(self, callback, path, params=None, data="", headers=None):
        return self._send("PUT", callback, path, params, data=data, headers=headers)

    def delete(self, callback, path, params=None, data="", headers=None):
        return self._send("DELETE", callback, path, params, data=data, headers=headers)

    def post(self, callback, path, params=None, data="", headers=None):
        return self._send("POST", callback, path, params, data=data, headers=headers)


def _connection_reason(exc: Exception) -> str:
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


class Client(consul.std.Consul):
    """py-consul ``Consul`` whose every request is recorded."""

    def __init__(self, *args, recorder: Recorder | None = None, **kwargs) -> None:
        self._recorder = recorder
        super().__init__(*args, **kwargs)

    def http_connect(self, host, port, scheme, verify=True, cert=None):
        client = RecordingHTTPClient(host, port, scheme, verify, cert, connections_timeout=self.connections_timeout)
        client.recorder = self._recorder
        return client


def connect(settings: Settings, *, recorder: Recorder | None = None, timeout: float | None = 10.0) -> Client:
    """A recording client for the Consul agent ``settings`` point at."""
    parts = urllib.parse.urlsplit(settings.consul_addr or "http://127.0.0.1:8500")
    host = parts.hostname or "127.0.0.1"
    verify: bool | str = settings.ssl_verify
    if settings.cacert and settings.ssl_verify:
        verify = settings.cacert
    cert = (settings.client_cert, settings.client_key) if settings.client_cert and settings.client_key else None
    client = Client(
        host=host,
        port=parts.port or 8500,
        scheme=parts.scheme or "http",
        verify=verify,
        cert=cert,
        connections_timeout=timeout,
        recorder=recorder,
    )
    # py-consul lets CONSUL_HTTP_TOKEN override an explicit token; ours wins.
    client.token = settings.token
    return client


@contextlib.contextmanager
def translate_errors(what: str = "") -> Iterator[None]:
    """Map py-consul exceptions to Foundation errors (the adapter edge)."""
    try:
        yield
    except FoundationError:
        raise
    except consul.ACLPermissionDenied as exc:
        raise PermissionDeniedError(
            f"Consul refused the request{f' ({what})' if what else ''}: permission denied (403)",
            hint="check the ACL token: --token or CONSUL_HTTP_TOKEN",
        ) from exc
    except consul.ACLDisabled as exc:
        raise PermissionDeniedError(f"Consul ACLs are disabled or the request was unauthorized: {exc}") from exc
    except consul.NotFound as exc:
        raise NotFoundError(f"not found{f': {what}' if what else ''}") from exc
    except consul.base.ConsulException as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if text.startswith("400"):
            raise UsageError(f"Consul rejected the request{f' ({what})' if what else ''}: {text[4:]}") from exc
        if text.startswith("409"):
            raise ConflictError(f"Consul reported a conflict{f' ({what})' if what else ''}: {text[4:]}") from exc
        if text.startswith("500") and "No cluster leader" in text:
            raise UnreachableError(
                "Consul has no cluster leader right now",
                hint="servers may be starting or have lost quorum; see `foundation status`",
            ) from exc
        raise FoundationError(f"Consul error{f' ({what})' if what else ''}: {text}") from exc
