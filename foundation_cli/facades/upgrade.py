"""``foundation upgrade``: a raft-aware rolling restart, optionally with a new Consul binary or agent.

For each node in :func:`foundation_cli.core.upgrade.plan_order`: drain it (its
singletons move first; skipped when it was drained already), over SSH put the
new binary where the running Consul was started from (if it differs), restart
Consul through its service, optionally install and restart the node agent,
wait until the new Consul runs, the node is alive again and — for a server —
autopilot is healthy with the failure tolerance it had before; then undrain.
The first node that does not come back stops the roll (the rest untouched).
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Callable
from typing import Any

from foundation_cli.core import upgrade as plan
from foundation_cli.core.upgrade import UpgradeStep
from foundation_cli.errors import FoundationError


class Upgrader:
    def __init__(self, client, *, dry_run: bool = False, say: Callable[[str], None] = lambda _m: None) -> None:
        self.client = client
        self.dry_run = dry_run
        self.say = say
        self._bundles: Any = None  # agent_bundle.Selector: one bundle per (python, arch), built when first needed

    def plan(self, *, force: bool) -> tuple[list[UpgradeStep], int]:
        raft = self.client.operator.raft_config()
        _i, nodes = self.client.catalog.nodes()
        steps = plan.plan_order(raft, nodes or [])
        tolerance = plan.check_tolerance(self.client.operator.autopilot_health(), force=force)
        return steps, tolerance

    def run(
        self,
        steps: list[UpgradeStep],
        *,
        tolerance: int,
        binary: bytes | None,
        agent: bool,
        timeout: float,
    ) -> list[UpgradeStep]:
        from foundation_cli.facades.drain import Drainer

        drainer = Drainer(self.client, dry_run=self.dry_run)
        already = set(drainer.drained())
        for step in steps:
            step.actions = (["drain"] if step.node not in already else []) + (
                ["consul binary"] if binary is not None else []
            )
            step.actions += ["restart consul"] + (["agent install", "restart agent"] if agent else [])
            step.actions += ["wait healthy"] + (["undrain"] if step.node not in already else [])
        if self.dry_run:  # the order, as the script of what each node would get (nothing is sent)
            for step in steps:
                step.result = "planned"
                self._record_plan(step, drain=step.node not in already, binary=binary is not None, agent=agent)
            return steps
        for n, step in enumerate(steps):
            step.started = time.time()
            t0 = time.monotonic()
            self.say(f"[{n + 1}/{len(steps)}] {step.node} ({step.role})")
            try:
                self._one(step, drainer, already, tolerance=tolerance, binary=binary, agent=agent, timeout=timeout)
                step.result = "done"
            except FoundationError as exc:
                step.result, step.detail = "failed", exc.message
            step.seconds = round(time.monotonic() - t0, 2)
            if step.result == "failed":
                for rest in steps[n + 1 :]:
                    rest.result, rest.detail = "skipped", f"stopped after {step.node} failed"
                break
        return steps

    def _record_plan(self, step, *, drain: bool, binary: bool, agent: bool) -> None:
        from foundation_cli.core import drain as core_drain
        from foundation_cli.facades import remote
        from foundation_cli.raw.operation import RawOperation
        from foundation_cli.raw.recorder import current_recorder

        recorder = current_recorder()
        if drain:
            self.client.kv.put(core_drain.mark_key(step.node), core_drain.mark_body("foundation upgrade"))
        address = remote.node_address(step.node) or step.address or step.node
        h = remote.host_ssh(address)
        commands = ([f"# put the new consul binary in place of: {plan.CONSUL_EXE}"] if binary else []) + [
            plan.RESTART_CONSUL
        ]
        if agent:
            commands.append(plan.RESTART_AGENT)
        for command in commands:
            op = RawOperation(kind="ssh-exec", host=address, user=h.user or "", port=h.port or 22, command=command)
            op.dry_run = True
            op.finish(summary=f"not sent (dry run): {step.node}, {step.role}")
            recorder.add(op)
        if drain:
            self.client.kv.delete(core_drain.mark_key(step.node))

    # ------------------------------------------------------------------ one node
    def _one(self, step, drainer, already: set[str], *, tolerance: int, binary, agent: bool, timeout: float) -> None:
        from foundation_cli.facades import remote

        if not step.address:
            raise FoundationError(f"no address for node {step.node}")
        details: list[str] = []
        if step.node not in already:
            self.say(f"  drain {step.node}")
            res = drainer.drain(
                step.node, reason="foundation upgrade", by="foundation upgrade", wait=True, timeout=timeout
            )
            if res.pending:
                details.append("drain incomplete: " + "; ".join(res.pending))
        address = remote.node_address(step.node) or step.address
        conn = remote.connect(address)
        try:
            old_pid = conn.run(plan.CONSUL_PID, write=False, timeout=30).stdout.strip()
            if binary is not None:
                details.append(self._binary(conn, binary))
            self.say(f"  restart consul on {step.node}")
            conn.run(plan.RESTART_CONSUL, timeout=120, check=True)
            if agent:
                details.append(self._agent(conn, step))
            self._wait_new_pid(conn, old_pid, timeout)
        finally:
            conn.close()
        self.say(f"  wait for {step.node} (alive{', autopilot healthy' if step.role != 'client' else ''})")
        self._wait_healthy(step, tolerance=tolerance, timeout=timeout)
        if step.node not in already:
            self.say(f"  undrain {step.node}")
            drainer.undrain(step.node, wait=True, timeout=timeout)
        step.detail = "; ".join(d for d in details if d)

    def _binary(self, conn, binary: bytes) -> str:
        from foundation_cli.core import consul_binary

        arch = conn.run("uname -m", write=False, sudo=False, timeout=30).stdout.strip()
        if arch and not consul_binary.fits(binary[:20], arch):
            raise FoundationError(
                f"{conn.label}: the consul binary is {consul_binary.describe(binary[:20])}, the host is {arch}",
                hint="upgrade hosts of each architecture with a binary built for it (--consul-binary per run)",
            )
        exe = conn.run(plan.CONSUL_EXE, write=False, timeout=30).stdout.strip()
        if not exe.startswith("/"):
            raise FoundationError(f"{conn.label}: cannot tell which consul binary runs (no foundation-consul)")
        digest = hashlib.sha256(binary).hexdigest()
        have = conn.run(f"sha256sum {shlex.quote(exe)}", write=False, timeout=60).stdout.split()[:1]
        if have == [digest]:
            return f"{exe} already sha256 {digest[:12]}"
        conn.upload(exe, binary, mode=0o755)
        check = conn.run(f"sha256sum {shlex.quote(exe)}", write=False, timeout=60).stdout.split()[:1]
        if check != [digest]:
            raise FoundationError(f"{conn.label}: consul upload to {exe} corrupted (sha256 mismatch)")
        return f"{exe} ← sha256 {digest[:12]}"

    def _agent(self, conn, step) -> str:
        from foundation_cli.core import agent_bundle, bootstrap

        p = bootstrap.probe(conn, install_root="/opt/foundation", python="python3")
        host_plan = bootstrap.HostPlan(
            alias=conn.label,
            address=step.address or "",
            node_name=step.node,
            server=step.role != "client",
            consul_config={},
        )
        if self._bundles is None:
            self._bundles = agent_bundle.Selector()
        # The host's own Python and architecture (Debian 11's 3.9, arm64 …), as `up` chooses it.
        bundle = self._bundles(p.python or "", p.arch or "")
        result = bootstrap.install_agent(conn, p, host_plan, bundle, self.say)
        conn.run(plan.RESTART_AGENT, timeout=60, check=True)
        return f"agent {result.state}"

    def _wait_new_pid(self, conn, old_pid: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = conn.run(plan.CONSUL_PID, write=False, timeout=30).stdout.strip()
            if pid and pid != old_pid:
                return
            time.sleep(0.3)
        raise FoundationError(f"{conn.label}: consul did not start again within {timeout:.0f}s")

    def _wait_healthy(self, step, *, tolerance: int, timeout: float) -> None:
        plan.wait_recovered(self.client, step.node, server=step.role != "client", tolerance=tolerance, timeout=timeout)
