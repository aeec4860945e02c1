"""``/v1/acl``: bootstrap, token self/create, policy read-by-name/create/update (what ``up`` needs).

Answers come back whole (:class:`Reply`, whatever the status): ACL callers must tell "ACL not found"
(an unknown token) from "Permission denied" and from "bootstrap no longer allowed", which are all 403.
``token`` sends that token instead of the client's own; ``anonymous=True`` sends none at all.
"""

from __future__ import annotations

import json
from typing import Any

from foundation_cli.tools.consul.base import Endpoint
from foundation_cli.tools.consul.gateway import Reply, as_reply


class ACL(Endpoint):
    def _send(self, method: str, path: str, body: Any = None, *, token: str | None = None, anonymous: bool = False):
        http = self.client.http
        saved = http.token
        if anonymous:
            http.token = None
        try:
            headers = {"X-Consul-Token": token} if token else None
            data = json.dumps(body) if body is not None else ""
            if method == "GET":
                response = http.get(lambda r: r, path, headers=headers)
            else:
                response = http.put(lambda r: r, path, data=data, headers=headers)
        finally:
            http.token = saved
        if not hasattr(response, "code"):  # a dry run's placeholder answer (the write was not sent)
            return Reply(status=200, headers={}, body=None)
        return as_reply(response)

    def bootstrap(self) -> Reply:
        """``PUT /v1/acl/bootstrap`` (no token): the management token once; 403 "no longer allowed" after."""
        return self._send("PUT", "/v1/acl/bootstrap", anonymous=True)

    def token_self(self, token: str) -> Reply:
        """``GET /v1/acl/token/self`` with ``token``: 200 when Consul knows it, 403 "ACL not found" else."""
        return self._send("GET", "/v1/acl/token/self", token=token, anonymous=True)

    def token_create(self, body: dict[str, Any], *, token: str) -> Reply:
        """``PUT /v1/acl/token`` (SecretID, Description, Policies, NodeIdentities …) with a management token."""
        return self._send("PUT", "/v1/acl/token", body, token=token)

    def policy_read_by_name(self, name: str, *, token: str) -> Reply:
        """``GET /v1/acl/policy/name/<name>`` (403 "ACL not found" when there is none)."""
        return self._send("GET", f"/v1/acl/policy/name/{name}", token=token)

    def policy_create(self, body: dict[str, Any], *, token: str) -> Reply:
        """``PUT /v1/acl/policy`` (Name, Description, Rules)."""
        return self._send("PUT", "/v1/acl/policy", body, token=token)

    def policy_update(self, policy_id: str, body: dict[str, Any], *, token: str) -> Reply:
        """``PUT /v1/acl/policy/<id>``."""
        return self._send("PUT", f"/v1/acl/policy/{policy_id}", body, token=token)
