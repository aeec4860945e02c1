"""Old agent bundles are pruned, but never one another checkout (or `up`) may be using right now."""

from __future__ import annotations

import os
import time

from foundation_cli.core import agent_bundle


def test_prune_keeps_the_target_recent_bundles_and_other_pythons(tmp_path):
    now = time.time()
    target = tmp_path / "agent-3.11-x86_64-aaaa.tar.gz"
    recent = tmp_path / "agent-3.11-x86_64-bbbb.tar.gz"  # another checkout built it a minute ago
    stale = tmp_path / "agent-3.11-x86_64-cccc.tar.gz"
    other = tmp_path / "agent-3.9-aarch64-dddd.tar.gz"
    for path in (target, recent, stale, other):
        path.write_bytes(b"x")
    os.utime(recent, (now - 60, now - 60))
    old = now - agent_bundle.STALE_BUNDLE_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    agent_bundle.prune_bundles(target, now=now)
    assert target.exists() and recent.exists() and other.exists()
    assert not stale.exists()


def test_a_reused_bundle_is_marked_in_use(tmp_path):
    bundle = tmp_path / "agent-3.11-x86_64-eeee.tar.gz"
    bundle.write_bytes(b"x")
    old = time.time() - 2 * agent_bundle.STALE_BUNDLE_SECONDS
    os.utime(bundle, (old, old))
    agent_bundle._used(bundle)
    assert time.time() - bundle.stat().st_mtime < agent_bundle.STALE_BUNDLE_SECONDS
