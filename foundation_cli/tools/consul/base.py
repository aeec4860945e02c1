"""What every endpoint group shares: one call helper over the gateway's HTTP client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from foundation_cli.tools.consul.gateway import Callback, Response, as_json, index_of, raise_for_status

if TYPE_CHECKING:
    from foundation_cli.tools.consul.client import Client

Params = list[tuple[str, Any]]


class Endpoint:
    """One Consul endpoint group (``/v1/kv``, ``/v1/session`` …) on a :class:`Client`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _consistency(self, params: Params, consistency: str | None) -> None:
        mode = consistency or self.client.consistency
        if mode in ("consistent", "stale"):
            params.append((mode, "1"))

    @staticmethod
    def _blocking(params: Params, index: Any, wait: str | None) -> None:
        if index:
            params.append(("index", index))
            if wait:
                params.append(("wait", wait))

    def _call(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        data: str | bytes | None = None,
        *,
        parse: Callback = as_json,
        allow_404: bool = True,
        allow: tuple[int, ...] = (),
        with_index: bool = False,
        raw: bool = False,
    ) -> Any:
        """Send through the gateway; raise the translated error unless the status is allowed; parse."""

        def callback(response: Response) -> Any:
            if response.code not in allow:
                raise_for_status(method, path, response, allow_404=allow_404)
            value = parse(response)
            return (index_of(response), value) if with_index else value

        http = self.client.http
        if method == "GET":
            return http.get(callback, path, params=params, raw=raw)
        if method == "PUT":
            return http.put(callback, path, params=params, data=data if data is not None else "")
        if method == "DELETE":
            return http.delete(callback, path, params=params)
        if method == "POST":
            return http.post(callback, path, params=params, data=data if data is not None else "")
        raise ValueError(f"unsupported method {method}")
