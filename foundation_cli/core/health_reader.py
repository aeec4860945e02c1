"""Reading Consul for the health monitor: one GET, its status, headers and decoded body, kept whole."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from foundation_cli.raw.operation import RawOperation

if TYPE_CHECKING:  # the gateway's whole answer (status, headers, body, the recorded request)
    from foundation_cli.tools.consul import Reply as Answer

# ----------------------------------------------------------------------------------------------
# Reading


class ReadError(Exception):
    """A read that failed; the snapshot keeps going without it (listed under ``errors``)."""


class Reader:
    """GETs through the Consul gateway, returning status, headers and decoded JSON.

    The :class:`RawOperation` returned with each answer is the one the gateway
    recorded: what the evidence shows is what was sent.
    """

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self._local = threading.local()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            self._local.client = client
        return client

    def get(self, path: str, params: list[tuple[str, str]] | None = None, *, timeout: float | None = None) -> Answer:
        from foundation_cli.errors import FoundationError

        client = self._client()
        try:
            reply = client.request("GET", path, list(params or []))
        except FoundationError as exc:
            raise ReadError(exc.message) from None
        except Exception as exc:  # noqa: BLE001 - any transport failure becomes a partial snapshot
            raise ReadError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        if reply.operation is None:
            reply.operation = RawOperation(kind="consul-http", method="GET", url=path)
        return reply


def _ok(answer: Answer, what: str, *, allow: tuple[int, ...] = ()) -> Answer:
    if answer.status == 200 or answer.status in allow:
        return answer
    text = answer.body if isinstance(answer.body, str) else ""
    raise ReadError(f"{what}: HTTP {answer.status} {text.strip()[:120]}".strip())


STALE = [("stale", "")]
