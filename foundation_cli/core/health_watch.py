"""Windowed watches for the health monitor: blocking queries over a short window, and check history.

:class:`Watches` is mixed into :class:`~foundation_cli.core.health_monitor.HealthMonitor`;
it uses the monitor's ``reader`` and ``_get`` and keeps the check-status history
between snapshots (``--watch``, the agent task).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from foundation_cli.core.health_reader import STALE, Reader, ReadError

if TYPE_CHECKING:
    from foundation_cli.core.health_reader import Answer


class Watches:
    """Blocking-query watches (catalog churn, events, check flapping) and the check history."""

    history_s: float
    _last_status: dict[tuple[str, str], str]
    _transitions: dict[tuple[str, str], list[tuple[float, str, str]]]
    _history_started: float | None
    reader: Reader

    def _get(self, reads: dict, name: str, path: str, params=None, *, allow: tuple[int, ...] = ()) -> Answer:
        raise NotImplementedError  # HealthMonitor's: one recorded read, kept under ``name``

    def _blocking(
        self, reads, name: str, path: str, window: float, params=None, *, on_answer: Callable, max_reads: int = 50
    ) -> int:
        """Read once, then block on the index until ``window`` ends; ``on_answer`` sees each new state.

        ``max_reads`` bounds the work on a busy cluster (each answer is the whole list again).
        """
        deadline = time.monotonic() + window
        first = self._get(reads, name, path, list(params or []))
        on_answer(first)
        index = first.index
        reads_done = 1
        while index is not None and reads_done < max_reads:
            remaining = deadline - time.monotonic()
            if remaining < 0.05:
                break
            wait = f"{int(remaining * 1000)}ms"
            try:
                answer = self.reader.get(path, [*(params or []), ("index", str(index)), ("wait", wait)])
            except ReadError:
                break
            if answer.status != 200:
                break
            reads_done += 1
            if answer.index is not None and answer.index != index:
                on_answer(answer)
            index = answer.index
        return reads_done

    def _watch_catalog(self, reads, window: float) -> dict:
        seen: list[int] = []
        state: dict[str, Any] = {}

        def on_answer(answer: Answer) -> None:
            if answer.index is not None:
                seen.append(answer.index)
            state["services"] = answer.body or {}

        start = time.monotonic()
        self._blocking(reads, "catalog_services", "/v1/catalog/services", window, STALE, on_answer=on_answer)
        nodes = self._get(reads, "catalog_nodes", "/v1/catalog/nodes", STALE)
        return {
            "indexes": seen,
            "elapsed": max(window, time.monotonic() - start),
            "services": state.get("services", {}),
            "nodes": len(nodes.body or []),
        }

    def _watch_events(self, reads, window: float) -> dict:
        snapshots: list[list] = []
        start = time.monotonic()
        self._blocking(reads, "events", "/v1/event/list", window, on_answer=lambda a: snapshots.append(a.body or []))
        return {"snapshots": snapshots, "elapsed": max(window, time.monotonic() - start)}

    def _watch_checks(self, reads, window: float) -> dict:
        transitions: dict[tuple[str, str], list[str]] = {}
        meta: dict[tuple[str, str], dict] = {}
        state: dict[str, Any] = {"last": None, "samples": 0}

        def on_answer(answer: Answer) -> None:
            state["samples"] += 1
            checks = answer.body or []
            state["last"] = checks
            for check in checks:
                key = (check.get("Node", ""), check.get("CheckID", ""))
                seq = transitions.get(key)
                status = check.get("Status", "")
                if seq is None:
                    transitions[key] = [status]
                    meta[key] = check
                elif seq[-1] != status:
                    seq.append(status)

        start = time.monotonic()
        self._blocking(reads, "health_checks", "/v1/health/state/any", window, STALE, on_answer=on_answer, max_reads=20)
        return {
            "last": state["last"] or [],
            "sequences": {k: v for k, v in transitions.items() if len(v) > 1},
            "meta": meta,
            "samples": state["samples"],
            "elapsed": max(window, time.monotonic() - start),
        }

    def _merge_history(self, raw: dict) -> dict:
        """Carry check transitions across snapshots (``--watch``, the agent task) within ``history_s``.

        A status that differs from the one seen at the end of the previous
        snapshot counts as a transition too; transitions older than the
        horizon are forgotten, so the flapping list describes the recent past.
        """
        if not raw:
            return raw
        now = time.monotonic()
        if self._history_started is None:
            self._history_started = now
        sequences = raw.get("sequences") or {}
        current = {(c.get("Node", ""), c.get("CheckID", "")): c.get("Status", "") for c in raw.get("last") or []}
        previous, transitions = self._last_status, self._transitions
        if previous:
            for key, status in current.items():
                before = previous.get(key)
                seq = sequences.get(key)
                first = seq[0] if seq else status
                if before is not None and before != first:
                    transitions.setdefault(key, []).append((now, before, first))
        for key, seq in sequences.items():
            for before, after in zip(seq, seq[1:], strict=False):
                transitions.setdefault(key, []).append((now, before, after))
        for key in list(transitions):
            kept = [t for t in transitions[key] if now - t[0] <= self.history_s] if key in current else []
            if kept:
                transitions[key] = kept
            else:
                del transitions[key]
        self._last_status = current
        merged = {key: [ts[0][1]] + [t[2] for t in ts] for key, ts in transitions.items()}
        elapsed = max(float(raw.get("elapsed") or 0.0), min(now - self._history_started, self.history_s))
        return {**raw, "sequences": merged, "elapsed": elapsed}
