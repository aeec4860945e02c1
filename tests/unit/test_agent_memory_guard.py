"""The agent's memory guard (foundation_cli/agent/memory_guard.py): its setting, its check, its decision."""

from __future__ import annotations

import logging
import os
import threading
from types import SimpleNamespace

import pytest

from foundation_cli.agent import memory_guard


def test_reads_its_own_rss_and_peak() -> None:
    mem = memory_guard.memory_of()
    assert 1_000_000 < mem["VmRSS"] <= mem["VmHWM"]
    assert memory_guard.memory_of(2**30) == {}  # no such process


@pytest.mark.parametrize(
    ("raw", "bound", "problem"),
    [("", 256, None), ("512", 512, None), ("0", 0, None), ("lots", 256, "whole number"), ("-5", 256, "negative")],
)
def test_setting(raw: str, bound: int, problem: str | None) -> None:
    got, why = memory_guard.bound_mb({memory_guard.ENV: raw} if raw else {})
    assert got == bound and (why is None if problem is None else problem in why)


def test_check() -> None:
    mib = 1024 * 1024
    assert memory_guard.check(256, 257 * mib) and not memory_guard.check(256, 256 * mib)
    assert not memory_guard.check(0, 10**12) and not memory_guard.check(256, None)


def ctx() -> SimpleNamespace:
    return SimpleNamespace(logger=logging.getLogger("test.memory_guard"), extra={})


def test_over_the_bound_it_stops_the_agent_asking_for_a_restart(monkeypatch, caplog) -> None:
    monkeypatch.setenv(memory_guard.ENV, "1")  # 1 MiB: any Python is over it
    c, stop = ctx(), threading.Event()
    with caplog.at_level(logging.INFO, "test.memory_guard"):
        memory_guard.run(c, stop, every=0.01)
    assert stop.is_set() and c.extra["exit_code"] == memory_guard.EXIT_OVER_BOUND
    assert "over its bound of 1 MiB" in caplog.text


def test_within_the_bound_it_only_watches(monkeypatch) -> None:
    monkeypatch.setenv(memory_guard.ENV, str(1 << 20))  # 1 TiB
    c, stop = ctx(), threading.Event()
    looked = []
    real = memory_guard.memory_of

    def counting(pid="self"):
        looked.append(pid)
        if len(looked) == 3:
            stop.set()
        return real(pid)

    monkeypatch.setattr(memory_guard, "memory_of", counting)
    memory_guard.run(c, stop, every=0.01)
    assert len(looked) >= 3 and "exit_code" not in c.extra


def test_zero_turns_it_off(monkeypatch) -> None:
    monkeypatch.setenv(memory_guard.ENV, "0")
    c, stop = ctx(), threading.Event()
    memory_guard.run(c, stop)  # returns at once
    assert not stop.is_set() and "exit_code" not in c.extra
    assert os.environ[memory_guard.ENV] == "0"
