"""An `up` run planned without SSH, for the unit tests of its steps (plan, secure_plan, record, …)."""

from __future__ import annotations

from typing import Any

from foundation_cli.core import cluster_config as cc
from foundation_cli.core.bootstrap import HostResult, Probe
from foundation_cli.core.orchestrator import UpRun, plan, ssh_options


def up_run(text: str, **fields: Any) -> UpRun:
    """A run of foundation.yaml ``text``, nothing probed yet; ``fields`` set the run's own (``state``,
    ``parallel``, …). The caller points FOUNDATION_STATE_DIR at a temporary folder first."""
    cfg = cc.parse(text)
    return UpRun(
        cfg=cfg,
        hosts=cfg.hosts,
        opts=ssh_options(cfg),
        say=lambda _h, _m: None,
        results={h.address: HostResult(alias=h.address) for h in cfg.hosts},
        **fields,
    )


def planned_run(text: str, *, probes: dict[str, Probe] | None = None, **fields: Any) -> UpRun:
    """:func:`up_run`, each host probed as ``probes`` says (default: every host, named after its address,
    at 10.0.0.N in the file's order), then ``plan()``."""
    run = up_run(text, **fields)
    if probes is None:
        probes = {h.address: Probe(hostname=h.address, addr=f"10.0.0.{i}") for i, h in enumerate(run.hosts, 1)}
    run.probes = probes
    plan(run)
    return run
