"""`foundation status` / `metrics` / `optimize`: HealthMonitor and Optimizer (issue 6)."""

from __future__ import annotations

import time
from typing import Any, Optional

import typer

from foundation_cli.commands.common import command, current

PANEL = "Health"
SPARK = "▁▂▃▄▅▆▇█"


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    command(root, "status", rich_help_panel=PANEL)(status)
    command(root, "metrics", rich_help_panel=PANEL)(metrics)
    command(root, "optimize", rich_help_panel=PANEL)(optimize)


# ----------------------------------------------------------------------------------------------
# Commands


def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh live (Ctrl-C to stop)."),
    prometheus: bool = typer.Option(False, "--prometheus", help="Print a Prometheus text exposition instead."),
    window: float = typer.Option(1.0, "--window", help="Seconds to watch churn, events and checks.", min=0),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between --watch refreshes.", min=0.2),
) -> None:
    """Cluster health on one screen (servers, members, services, checks, rates).

    Servers, members, Foundation services, checks, churn, events, agent runtime. Reads are --stale where that is safe; rates are measured over --window.
    JSON schema: foundation_cli/schemas/status.json.

    Example: foundation status --watch
    """
    from foundation_cli.facades import health

    run = current()
    if watch:
        _watch(run, window=window, interval=interval, prometheus=prometheus)
        return
    snap = health.snapshot(run, window=window)
    if prometheus:
        from foundation_cli.core.health_export import prometheus as expose

        run.out.stdout.write(expose(snap))
        return
    data = snap.to_dict()
    data.update(_day2(run, data["errors"]))
    if run.settings.json:
        run.out.json(data)
        return
    run.out.console().print(_status_view(data, {}))
    for line in _day2_lines(data):
        run.out.line(line)
    for name, error in sorted(data["errors"].items()):
        run.out.warn(f"could not read {name}: {error}")


def _day2(run, errors: dict) -> dict:
    """Drained nodes and machines waiting to join (read here, not by the health monitor)."""
    from foundation_cli.core.strategies import read_discovered
    from foundation_cli.errors import FoundationError
    from foundation_cli.facades.drain import Drainer

    client = run.consul()
    out: dict = {"drained": [], "waiting": []}
    try:
        out["drained"] = [{"node": n} | m for n, m in sorted(Drainer(client).drained().items())]
    except FoundationError as exc:
        errors["drained"] = exc.message
    try:
        out["waiting"] = read_discovered(client)
    except FoundationError as exc:
        errors["waiting"] = exc.message
    out["optimizer"] = _optimizer_summary(client, errors)
    return out


def _optimizer_summary(client, errors: dict) -> dict | None:
    """The agents' last optimizer report in a line: counts, who stored it, when (``optimize --last``)."""
    import json

    from foundation_cli.core import keys
    from foundation_cli.errors import FoundationError

    try:
        _i, entry = client.kv.get(keys.OPTIMIZER_LAST)
    except FoundationError as exc:
        errors["optimizer"] = exc.message
        return None
    try:
        report = json.loads(entry["Value"]) if entry and entry.get("Value") else None
    except (TypeError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    return {
        "counts": report.get("counts") or {},
        "stored_by": report.get("stored_by"),
        "generated_at": report.get("generated_at"),
        "findings": len(report.get("recommendations") or []),
    }


def _day2_lines(data: dict) -> list[str]:
    lines = []
    if data.get("drained"):
        nodes = ", ".join(d["node"] + (f" ({d['reason']})" if d.get("reason") else "") for d in data["drained"])
        lines.append(f"drained {nodes}   (`foundation undrain NODE`)")
    opt = data.get("optimizer")
    if opt:
        import time

        counts = ", ".join(f"{n} {sev}" for sev, n in sorted(opt["counts"].items()) if n) or "no findings"
        age = f", {max(0, int(time.time() - opt['generated_at']))}s ago" if opt.get("generated_at") else ""
        lines.append(
            f"optimizer {counts} (stored by {opt.get('stored_by') or '?'}{age})   (`foundation optimize --last`)"
        )
    if data.get("waiting"):
        addrs = ", ".join(w["address"] for w in data["waiting"][:6]) + (" …" if len(data["waiting"]) > 6 else "")
        lines.append(f"waiting to join {len(data['waiting'])}: {addrs}   (`foundation discover-hosts --waiting`)")
    return lines


def metrics(
    window: float = typer.Option(1.0, "--window", help="Seconds to watch churn, events and checks.", min=0),
) -> None:
    """Health snapshot as Prometheus text (the numbers of `status --json`).

    Example: foundation metrics > /var/lib/node_exporter/textfile/foundation.prom
    """
    from foundation_cli.core.health_export import prometheus as expose
    from foundation_cli.facades import health

    run = current()
    run.out.stdout.write(expose(health.snapshot(run, window=window)))


def optimize(
    apply: bool = typer.Option(False, "--apply", help="Apply the live-safe changes (asks first; see --yes)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --apply: do not ask."),
    last: bool = typer.Option(False, "--last", help="Show the report the node agents stored last."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="With --apply: only this finding id or rule."),
    window: float = typer.Option(1.0, "--window", help="Seconds to watch churn, events and checks.", min=0),
) -> None:
    """Tuning recommendations, with evidence and the raw change (--explain).

    One line per finding; --explain adds evidence, reasoning and the raw change. --apply performs only changes that apply live through the Consul API, then
    re-reads to confirm each finding is gone. JSON schema: foundation_cli/schemas/optimize.json.

    Example: foundation optimize --explain
    """
    from foundation_cli.errors import UsageError
    from foundation_cli.facades import health

    run = current()
    if last and apply:
        raise UsageError("--last shows a stored report; it cannot be combined with --apply")
    if (yes or only) and not apply:
        raise UsageError("--yes and --only only make sense with --apply")
    if last:
        data = health.last_report(run)
        _print_report(run, data)
        return
    report = health.optimize(run, window=window)
    data = report.to_dict()
    if not apply:
        _print_report(run, data)
        return

    from foundation_cli.core import optimizer

    candidates = optimizer.applicable(report, only)
    if not run.settings.json:
        _print_report(run, data)
    if not candidates:
        if run.settings.json:
            run.out.json({**data, "applied": []})
        else:
            run.out.info("nothing to apply live" + (f" matching {', '.join(only)}" if only else ""))
        return
    _show_plan(run, data, {r.id for r in candidates})
    if not run.settings.dry_run and not yes:
        _confirm(run, len(candidates))
    outcome = health.apply_and_confirm(run, report, only=only)
    applied = outcome["applied"]
    final = outcome["report"].to_dict() if outcome["report"] is not report else data
    if run.settings.json:
        run.out.json({**final, "applied": applied})
    else:
        for item in applied:
            if item["status"] == "dry-run":
                run.out.info(f"{item['id']}: not sent (dry run)")
            elif item["status"] == "failed":
                run.out.warn(f"{item['id']}: failed: {item['error']}")
            elif item["confirmed"]:
                run.out.line(f"applied {item['id']}: confirmed, the finding is gone")
            else:
                run.out.warn(f"applied {item['id']}, but the finding is still present on re-read")
    failed = [a for a in applied if a["status"] == "failed" or a["confirmed"] is False]
    if failed:
        from foundation_cli.errors import PartialFailure

        raise PartialFailure(
            f"{len(failed)} of {len(applied)} change(s) not applied or not confirmed: "
            + ", ".join(a["id"] for a in failed),
            hint="run `foundation optimize --explain` to see the current evidence",
        )


# ----------------------------------------------------------------------------------------------
# --apply confirmation


def _confirm(run, count: int) -> None:
    run.out.confirm(
        f"apply {count} change(s) shown above?",
        no_answer="refusing to apply: no confirmation (stdin is closed or not a terminal)",
        no_answer_hint="re-run with --yes to apply without asking, or --dry-run to get the script",
        declined="not applied: the answer was not yes",
    )


def _show_plan(run, data: dict, ids: set[str]) -> None:
    out = run.out
    out.info("changes to apply (live):")
    for rec in data["recommendations"]:
        if rec["id"] not in ids:
            continue
        for change in rec["changes"]:
            api = change.get("api")
            if api:
                out.info(f"  {rec['id']}: {api['curl']}")
                if change.get("cli"):
                    out.info(f"    # consul: {change['cli']}")


# ----------------------------------------------------------------------------------------------
# Rendering: optimize


_SEV_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _print_report(run, data: dict) -> None:
    if run.settings.json:
        run.out.json(data)
        return
    out = run.out
    recs = data.get("recommendations") or []
    stored = data.get("stored_by")
    if stored:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data.get("generated_at") or 0))
        out.line(f"stored report from {stored} at {when}")
    if not recs:
        out.line("no recommendations: nothing to tune")
    explain = run.settings.explain
    for rec in recs:
        out.line(
            f"{rec['severity'].upper():8} {rec['id']:40} {rec['title']}  [{rec['applies']}{', auto' if rec['auto'] else ''}]"
        )
        if explain:
            _explain_rec(out, rec)
    for name, error in sorted((data.get("rule_errors") or {}).items()):
        out.warn(f"rule {name} failed: {error}")
    for name, error in sorted((data.get("read_errors") or {}).items()):
        out.warn(f"could not read {name}: {error} (rules that need it were skipped)")
    counts = data.get("counts") or {}
    if recs:
        out.info(
            f"{counts.get('critical', 0)} critical, {counts.get('warning', 0)} warning, {counts.get('info', 0)} info"
            + ("" if explain else " · --explain for evidence, reasoning and the raw change")
        )


def _explain_rec(out, rec: dict) -> None:
    import textwrap

    def wrap(text: str, indent: str, rest: str | None = None) -> str:
        return textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=rest or indent)

    out.line("  why:")
    out.line(wrap(rec["reasoning"], "    "))
    out.line("  evidence:")
    for ev in rec["evidence"]:
        out.line(f"    {ev['label']}: {ev['value']}")
        if ev.get("read"):
            out.line(f"      read by: {ev['read']['curl']}")
    out.line(f"  change ({rec['applies']}{', --apply can do it' if rec['auto'] else ''}):")
    for change in rec["changes"]:
        out.line(wrap(change["description"], "    - ", "      "))
        if change.get("api"):
            out.line(f"      {change['api']['curl']}")
        if change.get("cli"):
            out.line(f"      # consul: {change['cli']}")
        if change.get("config"):
            out.line("      agent config:")
            for line in change["config"].splitlines():
                out.line(f"        {line}")
    if rec.get("docs"):
        out.line("  docs: " + " ".join(rec["docs"]))
    out.line("")


# ----------------------------------------------------------------------------------------------
# Rendering: status


def sparkline(values: list[float]) -> str:
    """A tiny unicode sparkline of ``values`` (empty for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo
    return "".join(
        SPARK[0 if span == 0 else min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1)))] for v in values
    )


def _fmt_bytes(value: Any) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.0f} ms"


def _status_view(d: dict, history: dict[str, list[float]]):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    c, s, m = d["cluster"], d["servers"], d["members"]
    parts: list[Any] = []
    head = Text()
    head.append("cluster ", style="bold")
    head.append(f"{c.get('cluster_id') or '(no cluster record)'}  dc {c.get('datacenter') or '?'}  ")
    head.append(
        f"via {c.get('agent_node') or '?'} ({d['consul_addr']}, consul {c.get('agent_version') or '?'})", style="dim"
    )
    parts.append(head)

    ft = s.get("failure_tolerance")
    healthy = s.get("healthy")
    line = Text()
    line.append("servers ", style="bold")
    line.append(f"{s['count']} ({s['voters']} voters)  leader {s.get('leader') or 'NONE'}  ")
    line.append(f"failure tolerance {ft if ft is not None else 'n/a'}  ", style="red" if ft == 0 else "")
    line.append(
        "autopilot "
        + ("healthy" if healthy else "UNHEALTHY" if healthy is False else f"n/a ({s.get('autopilot_status')})"),
        style="green" if healthy else "red" if healthy is False else "dim",
    )
    if s.get("max_last_contact_ms") is not None:
        line.append(f"  leader contact {_ms(s['max_last_contact_ms'])}")
    if history.get("contact"):
        line.append(" " + sparkline(history["contact"]), style="cyan")
    parts.append(line)
    table = Table(box=None, pad_edge=False, header_style="bold dim")
    for col in ("server", "address", "role", "serf", "last contact", "version"):
        table.add_column(col)
    for srv in s["servers"]:
        table.add_row(
            srv["name"],
            srv["address"],
            "leader" if srv["leader"] else ("voter" if srv["voter"] else "non-voter"),
            srv.get("serf_status") or "?",
            _ms(srv.get("last_contact_ms")),
            srv.get("version") or "?",
        )
    parts.append(table)

    states = "  ".join(f"{k} {v}" for k, v in sorted(m["by_state"].items())) or "none"
    versions = "  ".join(f"{k}×{v}" for k, v in sorted(m["versions"].items()))
    mline = Text()
    mline.append("members ", style="bold")
    mline.append(f"{m['total']}: {states}   versions {versions}")
    if m["failed"]:
        mline.append(f"   failed: {', '.join(m['failed'][:8])}", style="red")
    parts.append(mline)

    if d["services"]:
        st = Table(box=None, pad_edge=False, header_style="bold dim", title=None)
        for col in ("foundation service", "mode", "instances", "checks p/w/c", "nodes"):
            st.add_column(col)
        for svc in d["services"]:
            nodes = ", ".join(svc["nodes"][:6]) + (" …" if len(svc["nodes"]) > 6 else "")
            st.add_row(
                svc["name"],
                svc.get("mode") or "?",
                str(svc["instances"]),
                f"{svc['passing']}/{svc['warning']}/{svc['critical']}",
                nodes or "-",
            )
        parts.append(st)
    else:
        parts.append(Text("foundation services: none", style="dim"))

    ch = d["checks"]
    cline = Text()
    cline.append("checks ", style="bold")
    cline.append(f"{ch['total']}: " + ("  ".join(f"{k} {v}" for k, v in sorted(ch["by_state"].items())) or "none"))
    if ch["flapping"]:
        flaps = ", ".join(f"{f['node']}/{f['check_id']}×{f['transitions']}" for f in ch["flapping"][:5])
        cline.append(f"   flapping: {flaps}", style="yellow")
    parts.append(cline)

    cu, ev, rt = d["churn"], d["events"], d["runtime"]
    rline = Text()
    rline.append("catalog ", style="bold")
    rline.append(
        f"{cu['nodes']} nodes, {cu['services']} services, {cu['instances']} instances; churn {cu['per_min']:g}/min"
    )
    if history.get("churn"):
        rline.append(" " + sparkline(history["churn"]), style="cyan")
    rline.append(f"   sessions {d['sessions']['total']}")
    parts.append(rline)
    eline = Text()
    eline.append("events ", style="bold")
    eline.append(
        f"{ev['per_min']:g}/min ({ev['new']} in {ev['window_s']:g}s), {ev['buffered']} buffered, largest {ev['max_size_bytes']} B of {ev['limit_bytes']}"
    )
    parts.append(eline)
    kline = Text()
    kline.append("agent runtime ", style="bold")
    gc = rt.get("gc_pause_total_ns")
    kline.append(
        f"goroutines {rt.get('goroutines') if rt.get('goroutines') is not None else 'n/a'}  "
        f"heap {_fmt_bytes(rt.get('alloc_bytes'))}  sys {_fmt_bytes(rt.get('sys_bytes'))}  "
        f"gc pause total {('%.1f ms' % (gc / 1e6)) if gc is not None else 'n/a'}"
    )
    parts.append(kline)
    foot = Text(f"read in {d['duration_ms']:.0f} ms (window {d['window_s']:g}s)", style="dim")
    if d["errors"]:
        foot.append(f"  · {len(d['errors'])} read(s) failed: {', '.join(sorted(d['errors']))}", style="yellow")
    parts.append(foot)
    return Group(*parts)


def _watch(run, *, window: float, interval: float, prometheus: bool) -> None:
    from rich.live import Live

    from foundation_cli.facades import health

    mon = health.monitor(run)
    history: dict[str, list[float]] = {"churn": [], "contact": []}
    console = run.out.console()
    snap = health.snapshot(run, window=window, mon=mon)
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                data = snap.to_dict()
                history["churn"] = (history["churn"] + [data["churn"]["per_min"]])[-30:]
                contact = data["servers"].get("max_last_contact_ms")
                if contact is None:
                    contact = data["runtime"].get("leader_last_contact_max_ms")
                history["contact"] = (history["contact"] + [contact or 0.0])[-30:]
                if prometheus:
                    from rich.text import Text

                    from foundation_cli.core.health_export import prometheus as expose

                    live.update(Text(expose(snap)))
                else:
                    live.update(_status_view(data, history))
                time.sleep(max(0.0, interval - window))
                snap = health.snapshot(run, window=window, mon=mon)
    except KeyboardInterrupt:
        return
