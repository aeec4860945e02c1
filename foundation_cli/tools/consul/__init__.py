"""Consul adapter: the one gateway every Consul call passes (see :mod:`.gateway`).

Use :func:`connect` for a :class:`Client` on the address the settings name;
its endpoint groups are ``client.kv``, ``.session``, ``.event``, ``.agent``,
``.health``, ``.catalog``, ``.status``, ``.operator``, ``.snapshot``, ``.txn``.
Errors arrive already translated into :mod:`foundation_cli.errors`.
"""

from foundation_cli.tools.consul.client import Client, Reply, connect, plan_client
from foundation_cli.tools.consul.gateway import PLAN_SESSION, RecordingHTTPClient

__all__ = ["PLAN_SESSION", "Client", "RecordingHTTPClient", "Reply", "connect", "plan_client"]
