"""The Consul client Foundation uses everywhere: py-consul's ``Consul`` on the recording gateway.

Its endpoint groups (``client.kv``, ``client.session``, ``client.event``,
``client.agent``, ``client.health``, ``client.catalog``, ``client.status``,
``client.operator``, ``client.snapshot``, ``client.txn``) are Foundation's own
(:mod:`.kv` …: one module per group, the API path written in each method);
py-consul's remaining groups (``acl``, ``coordinate`` …) still work and pass the
same gateway. :meth:`Client.request` is for callers that hold a request as
data (the optimizer's changes, the health monitor's reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import consul.std

from foundation_cli.raw.address import DEFAULT_CONSUL_ADDRESS, ConsulAddress
from foundation_cli.raw.recorder import Recorder
from foundation_cli.tools.consul.acl import ACL
from foundation_cli.tools.consul.agent import Agent
from foundation_cli.tools.consul.catalog import Catalog
from foundation_cli.tools.consul.event import Event
from foundation_cli.tools.consul.gateway import ELECTION_WINDOW, RecordingHTTPClient, Reply, as_reply
from foundation_cli.tools.consul.health import Health
from foundation_cli.tools.consul.kv import KV
from foundation_cli.tools.consul.operator import Operator
from foundation_cli.tools.consul.session import Session
from foundation_cli.tools.consul.snapshot import Snapshot
from foundation_cli.tools.consul.status import Status
from foundation_cli.tools.consul.txn import Txn

if TYPE_CHECKING:
    from foundation_cli.settings import Settings


class Client(consul.std.Consul):
    """A py-consul ``Consul`` whose every request passes the recording gateway."""

    def __init__(
        self,
        address: ConsulAddress = DEFAULT_CONSUL_ADDRESS,
        *,
        token: str | None = None,
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
        timeout: float | None = 10.0,
        recorder: Recorder | None = None,
        fallbacks: Sequence[ConsulAddress] = (),
        plan: bool = False,
        consistency: str = "default",
    ) -> None:
        self.address = address
        self._recorder = recorder
        self._fallbacks = tuple(fallbacks)
        self._plan = plan
        self._timeout = timeout
        super().__init__(
            host=address.host,
            port=address.port,
            scheme=address.scheme,
            verify=verify,
            cert=cert,
            consistency=consistency,
            connections_timeout=timeout,
        )
        self.token = token  # py-consul lets CONSUL_HTTP_TOKEN override an explicit token; ours wins
        self.kv = KV(self)
        self.session = Session(self)
        self.event = Event(self)
        self.agent = Agent(self)
        self.health = Health(self)
        self.catalog = Catalog(self)
        self.status = Status(self)
        self.operator = Operator(self)
        self.snapshot = Snapshot(self)
        self.txn = Txn(self)
        self.acl = ACL(self)  # Foundation's typed /v1/acl methods (replaces py-consul's)

    def http_connect(self, host, port, scheme, verify=True, cert=None) -> RecordingHTTPClient:
        """py-consul's hook: every request of every endpoint group goes through this client."""
        return RecordingHTTPClient(
            self.address,
            verify=verify,
            cert=cert,
            timeout=self._timeout,
            recorder=self._recorder,
            fallbacks=self._fallbacks,
            plan=self._plan,
        )

    # The token lives in the gateway (it adds the header); py-consul's endpoints read it here.
    @property
    def token(self) -> str | None:
        return self.http.token

    @token.setter
    def token(self, value: str | None) -> None:
        self.http.token = value

    @property
    def timeout(self) -> float | None:
        """Seconds to wait for a connection or an answer (blocking queries add their wait)."""
        return self.http.connections_timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.http.connections_timeout = value

    def request(
        self, method: str, path: str, params: list[tuple[str, Any]] | None = None, data: str | bytes | None = None
    ) -> Reply:
        """Send a request held as data; the answer whatever its status (transport errors still raise)."""
        method = method.upper()
        http = self.http
        if method == "GET":
            response = http.get(lambda r: r, path, params=params)
        elif method == "PUT":
            response = http.put(lambda r: r, path, params=params, data=data or "")
        elif method == "POST":
            response = http.post(lambda r: r, path, params=params, data=data or "")
        elif method == "DELETE":
            response = http.delete(lambda r: r, path, params=params)
        else:
            raise ValueError(f"unsupported method {method}")
        reply = as_reply(response)
        reply.operation = http.last_operation
        return reply


def connect(
    settings: Settings,
    *,
    recorder: Recorder | None = None,
    timeout: float | None = 10.0,
    failover: bool = True,
) -> Client:
    """A recording client for the Consul agent ``settings`` point at.

    TLS as the consul CLI does it: ``CONSUL_CACERT`` verifies the server
    (unless ``CONSUL_HTTP_SSL_VERIFY=false``), ``CONSUL_CLIENT_CERT`` +
    ``CONSUL_CLIENT_KEY`` authenticate us. ``failover``: when the address is
    unreachable, try the other servers the cluster state lists (never for a
    node agent, which must talk to its own node's Consul).
    """
    verify: bool | str = settings.ssl_verify
    if settings.cacert and settings.ssl_verify:
        verify = settings.cacert
    cert = (settings.client_cert, settings.client_key) if settings.client_cert and settings.client_key else None
    client = Client(
        settings.address,
        token=settings.token,
        verify=verify,
        cert=cert,
        timeout=timeout,
        recorder=recorder,
        fallbacks=settings.fallback_addresses if failover else (),
    )
    if failover:  # the CLI rides through leader elections; an agent has its own retry loops and deadlines
        client.http.election_window = ELECTION_WINDOW
    return client


def plan_client(address: ConsulAddress, *, recorder: Recorder, token: bool = False) -> Client:
    """A client that sends nothing: each request is recorded as it would be sent (``--explain`` of agents)."""
    client = Client(address, recorder=recorder, plan=True)
    if token:
        client.token = "<token>"
    return client
