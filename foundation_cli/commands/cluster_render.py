"""Rendering and wiring for the SSH side of `up` / `down` / `ssh`: per-host progress, summary, diffs."""

from __future__ import annotations

import threading

from foundation_cli.commands.common import current
from foundation_cli.errors import FoundationError, PartialFailure


def _prompt(text: str) -> str:
    import getpass

    return getpass.getpass(text)


class HostProgress:
    """One live line per host on a terminal (rich); plain 'host: state' lines otherwise."""

    def __init__(self, hosts: list[str]) -> None:
        self.run = current()
        import time

        self.started = time.monotonic()
        self.state = {h: "waiting" for h in hosts}
        self.lock = threading.Lock()
        self.live = None
        err = self.run.out.stderr
        self.tty = (
            hasattr(err, "isatty") and err.isatty() and not self.run.settings.quiet and not self.run.settings.explain
        )

    def __enter__(self) -> HostProgress:
        if self.tty:
            from rich.live import Live

            self.live = Live(
                self._render(), console=self.run.out.console(err=True), refresh_per_second=8, transient=True
            )
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def _render(self):
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        for host, state in self.state.items():
            style = "red" if state == "failed" else ("green" if state == "done" else "cyan")
            table.add_row(host, f"[{style}]{state}[/{style}]")
        return table

    def __call__(self, host: str, message: str) -> None:
        if host == "cluster" and self.live is None and not self.run.settings.json:
            _preload_table()
        with self.lock:
            self.state[host] = message
            if self.live is not None:
                self.live.update(self._render())
                if message.startswith("warning:") and host == "cluster":  # said before it happens, kept on screen
                    self.live.console.print(f"{host}: {message}")
            elif message in ("done", "failed") or message.startswith("warning:") or self.run.settings.verbosity > 0:
                import time

                self.run.out.info(f"{time.monotonic() - self.started:6.1f}s  {host}: {message}")


def _import_table() -> None:
    import rich.table  # noqa: F401
    import rich.text  # noqa: F401


_preloading: list[threading.Thread] = []


def _preload_table() -> None:
    """Import rich's table while `up` waits for the cluster (its CPU is idle then): the summary table
    of more than a few hosts needs rich also on a pipe, and the import took 0.15 s after the last host
    was done. Once per process."""
    if not _preloading:
        _preloading.append(threading.Thread(target=_import_table, daemon=True, name="preload-table"))
        _preloading[0].start()


def _print_results(results, *, title: str) -> None:
    run = current()
    rows = []
    for r in results:
        changed = [f"{s.step}: {s.state}" for s in r.steps if s.state not in ("unchanged", "skipped")]
        what = (f"{r.error} ({r.hint})" if r.hint else r.error) if r.error else ("; ".join(changed) or "unchanged")
        rows.append((r.alias, r.node_name, r.role, r.state, what))
    run.out.table(("HOST", "NODE", "ROLE", "STATE", "WHAT"), rows, title=title)
    for r in results:
        for s in r.steps:
            if s.diff and (run.settings.dry_run or run.settings.verbosity > 0 or run.settings.explain):
                run.out.info(f"--- {r.alias}: {s.step} diff")
                run.out.info(s.diff.rstrip("\n"))
        for w in r.warnings:
            run.out.warn(f"{r.alias}: {w}")


def up_remote(
    cfg,
    *,
    consul_binary: str | None,
    accept_new: bool,
    only: list[str] | None,
    join: list[str] | None = None,
    parallel: int = 10,
) -> None:
    """Run `up`, then say what it did on every host (table or ``--json``), also when it stopped early;
    then the one-line error, if any, with its exit status."""
    from foundation_cli.core import orchestrator

    run = current()
    stopped: orchestrator.UpStopped | None = None
    with HostProgress([h.address for h in cfg.hosts if not only or h.address in only]) as progress:
        try:
            result = orchestrator.up(
                cfg,
                consul_binary=consul_binary,
                accept_new=accept_new,
                only=only,
                prompt=_prompt,
                progress=progress,
                join=join,
                parallel=parallel,
                token=run.settings.token,
            )
        except orchestrator.UpStopped as stop:  # the hosts were (maybe) touched: show what happened on each
            stopped, result = stop, stop.result
    error = stopped.error if stopped is not None else _up_error(result, dry_run=run.settings.dry_run)
    if run.settings.json:
        run.out.json(result.to_dict(error))
    else:
        _print_results(result.hosts, title=None)
        for addr in result.removed:
            run.out.warn(
                f"{addr} is no longer in foundation.yaml: left alone (remove it with `foundation down --host {addr}`)"
            )
        for w in result.warnings:
            run.out.warn(w)
        if not run.settings.dry_run and result.http_addr and stopped is None:
            verdict = "unchanged" if all(h.state in ("unchanged", "failed") for h in result.hosts) else "changed"
            run.out.line(f"cluster {result.cluster_id} ({result.datacenter}) at {result.http_addr}: {verdict}")
    if stopped is not None:
        raise stopped.cause  # the error itself, or the bug (reported as one, with its traceback at -vv)
    if error is not None:
        raise error


def _up_error(result, *, dry_run: bool) -> FoundationError | None:
    """What a finished `up` exits with: its failed hosts (7; a host's own status when all failed), else
    a cluster that did not form in time (3), else nothing."""
    failed = result.failed
    if failed:
        names = ", ".join(h.alias for h in failed)
        if len(failed) == len(result.hosts):
            first = failed[0].error or "failed"
            text = first if len(failed) == 1 else f"all {len(failed)} hosts failed; first: {first}"
            err = FoundationError(text, hint=failed[0].hint)
            err.exit_status = failed[0].exit_status  # type: ignore[assignment]
            return err
        return PartialFailure(
            f"{len(failed)} of {len(result.hosts)} hosts failed: {names}"
            + (f" ({failed[0].error})" if len(failed) == 1 else ""),
            hint=failed[0].hint
            or "fix what the table says, then run `foundation up` again: it only redoes what is missing",
        )
    if result.warnings and not dry_run:
        from foundation_cli.errors import UnreachableError

        return UnreachableError(result.warnings[0])
    return None


def down_remote(*, purge: bool, only: list[str] | None) -> None:
    from foundation_cli.core import cluster_config, orchestrator

    run = current()
    cfg = cluster_config.load(run.settings.config_path)
    with HostProgress([h.address for h in cfg.hosts]) as progress:
        results = orchestrator.down(cfg, purge=purge, only=only, prompt=_prompt, progress=progress)
    if run.settings.json:
        run.out.json([r.to_dict() for r in results])
    else:
        _print_results(results, title=None)
    failed = [r for r in results if r.error]
    if failed:
        raise PartialFailure(
            f"{len(failed)} of {len(results)} hosts failed: {', '.join(r.alias for r in failed)}",
            hint=failed[0].hint or "fix what the table says, then run the same command again",
        )


def ssh_node(node: str, cmd: list[str]) -> None:
    """Exec the system ssh with the cluster's settings (interactive when no command)."""
    import shutil

    from foundation_cli.core import cluster_state
    from foundation_cli.errors import NotFoundError, UsageError
    from foundation_cli.raw.operation import RawOperation

    run = current()
    state = cluster_state.load() or {}
    nodes = state.get("nodes") or {}
    target = next((addr for addr, name in nodes.items() if name == node), None) or (
        node if node in nodes or node in (state.get("hosts") or []) else None
    )
    if target is None:
        known = ", ".join(sorted(nodes.values())) or "none (run `foundation up` first)"
        raise NotFoundError(f"no node {node!r} in this cluster", hint=f"nodes: {known}")
    from foundation_cli.facades import remote

    argv = remote.host_ssh(target, state).argv()  # the host's own user/port/key from foundation.yaml, else ssh:
    argv += cmd
    op = RawOperation(kind="local-process", argv=argv)
    op.finish()
    run.recorder.add(op)
    if run.settings.dry_run:
        return
    binary = shutil.which("ssh")
    if not binary:
        raise UsageError("ssh client not found on PATH")
    import subprocess

    code = subprocess.call([binary, *argv[1:]])
    if code:
        import typer

        raise typer.Exit(code)
