"""``/v1/kv``: get, put (plain, check-and-set, lock acquire/release), delete, list."""

from __future__ import annotations

from typing import Any

from foundation_cli.tools.consul.base import Endpoint, Params
from foundation_cli.tools.consul.gateway import as_bool, as_json, decode_values


class KV(Endpoint):
    def get(
        self,
        key: str,
        index: Any = None,
        recurse: bool = False,
        wait: str | None = None,
        consistency: str | None = None,
        keys: bool = False,
        separator: str | None = None,
    ) -> tuple[str | None, Any]:
        """``GET /v1/kv/<key>`` → (index, entry | entries | key names | None); values as bytes."""
        params: Params = []
        self._blocking(params, index, wait)
        if recurse:
            params.append(("recurse", "1"))
        if keys:
            params.append(("keys", True))
        if separator:
            params.append(("separator", separator))
        self._consistency(params, consistency)
        one = not recurse and not keys

        def parse(response):
            data = as_json(response)
            if not keys:
                data = decode_values(data, "Value")
            if one and isinstance(data, list):
                data = data[0] if data else None
            return data

        return self._call("GET", f"/v1/kv/{key}", params, parse=parse, with_index=True)

    def list(self, prefix: str, consistency: str | None = None) -> list[dict]:
        """``GET /v1/kv/<prefix>?recurse`` → every entry under ``prefix`` ([] when none)."""
        return self.get(prefix, recurse=True, consistency=consistency)[1] or []

    def put(
        self,
        key: str,
        value: str | bytes | None,
        cas: int | None = None,
        flags: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        """``PUT /v1/kv/<key>`` → whether it was written (false: a check-and-set or lock lost)."""
        params: Params = []
        if cas is not None:
            params.append(("cas", cas))
        if flags is not None:
            params.append(("flags", flags))
        if acquire:
            params.append(("acquire", acquire))
        if release:
            params.append(("release", release))
        return self._call("PUT", f"/v1/kv/{key}", params, data=value, parse=as_bool)

    def cas(self, key: str, value: str | bytes, index: int) -> bool:
        """``PUT /v1/kv/<key>?cas=<index>`` (index 0: only if absent)."""
        return self.put(key, value, cas=index)

    def acquire(self, key: str, value: str | bytes, session: str) -> bool:
        """``PUT /v1/kv/<key>?acquire=<session>``: take the lock (false when someone holds it)."""
        return self.put(key, value, acquire=session)

    def release(self, key: str, value: str | bytes, session: str) -> bool:
        """``PUT /v1/kv/<key>?release=<session>``: let the lock go."""
        return self.put(key, value, release=session)

    def delete(self, key: str, recurse: bool | None = None, cas: int | None = None) -> bool:
        """``DELETE /v1/kv/<key>`` (``?recurse``: the whole prefix; ``?cas``: only at that index)."""
        params: Params = []
        if recurse:
            params.append(("recurse", "1"))
        if cas is not None:
            params.append(("cas", cas))
        return self._call("DELETE", f"/v1/kv/{key}", params, parse=as_bool)
