"""``/v1/txn``: several KV/session/node operations applied atomically."""

from __future__ import annotations

import json
from typing import Any

from foundation_cli.tools.consul.base import Endpoint


class Txn(Endpoint):
    def put(self, operations: list[dict[str, Any]]) -> dict:
        """``PUT /v1/txn`` → {Results, Errors}; a rolled-back transaction (409) is returned, not raised."""
        return self._call("PUT", "/v1/txn", data=json.dumps(operations), allow=(409,))
