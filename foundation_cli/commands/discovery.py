"""`foundation discover` / `services`: service discovery with health (issue 5)."""

from __future__ import annotations

from typing import Optional

import typer

from foundation_cli.commands.common import command, current
from foundation_cli.commands.completion import catalog_service_names

PANEL = "Discovery"
app = typer.Typer()
HEALTH_STYLE = {"passing": "green", "warning": "yellow", "critical": "red"}
# rich lays out ~1,000 rows in over a second; past this many rows print plain aligned columns.
PLAIN_TABLE_ROWS = 200


@command(app, "discover", rich_help_panel=PANEL)
def discover(
    name: str = typer.Argument(..., help="Service name.", autocompletion=catalog_service_names),
    passing: bool = typer.Option(False, "--passing", help="Only instances whose checks all pass."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Only instances with this tag."),
    near: Optional[str] = typer.Option(
        None, "--near", help="Sort by estimated round-trip time from NODE ('_agent': this agent)."
    ),
    stale: bool = typer.Option(False, "--stale", help="Let any server answer (faster, may lag the leader slightly)."),
) -> None:
    """Find the instances of service NAME with their health.

    One row per instance: node, address, port, tags, aggregated health (worst of its service and node checks); -v adds each check's output. --json follows foundation_cli/schemas/discover.json (docs/discovery.md).

    Example: foundation discover web --passing --json
    """
    from foundation_cli.facades.service_mesh import ServiceMesh

    run = current()
    result = ServiceMesh(run.consul()).discover(name, passing=passing, tag=tag, near=near, stale=stale)
    if run.settings.json:
        run.out.json(result)
        return
    if not result["instances"]:
        run.out.info(f"no instances of {name} match")
        return
    verbose = run.settings.verbosity > 0
    rows = []
    for inst in result["instances"]:
        checks = ", ".join(f"{c['name']}:{c['status']}" for c in inst["checks"] if c["status"] != "passing")
        rows.append(
            (
                inst["node"],
                inst["address"],
                inst["port"] or "",
                ",".join(inst["tags"]),
                inst["health"],
                checks if not verbose else _check_lines(inst["checks"]),
            )
        )
    columns = ("NODE", "ADDRESS", "PORT", "TAGS", "HEALTH", "CHECKS" if verbose else "FAILING CHECKS")
    if len(rows) > PLAIN_TABLE_ROWS:
        _plain_table(columns, rows)
    else:
        from foundation_cli.commands.output import Styled

        rows = [(*r[:4], Styled(r[4], HEALTH_STYLE.get(r[4]) if run.settings.color else None), r[5]) for r in rows]
        run.out.table(columns, rows)
    h = result["health"]
    stale_note = f", stale read ({result['last_contact_ms']} ms behind)" if stale else ""
    run.out.info(
        f"{result['count']} instance(s): {h['passing']} passing, {h['warning']} warning, {h['critical']} critical"
        f"{stale_note}"
    )


def _plain_table(columns: tuple, rows: list[tuple]) -> None:
    cells = [[str(c) for c in columns]] + [["" if c is None else str(c).replace("\n", "; ") for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    current().out.line(text)


def _check_lines(checks: list[dict]) -> str:
    lines = []
    for c in checks:
        output = " ".join((c.get("output") or "").split())
        if len(output) > 80:
            output = output[:77] + "..."
        lines.append(f"{c['name']} ({c['scope']}): {c['status']}{' — ' + output if output else ''}")
    return "\n".join(lines)


@command(app, "services", rich_help_panel=PANEL)
def services() -> None:
    """List every service with its instance, node and check counts.

    One request, however big the catalog.

    Uses /v1/internal/ui/services (what Consul's UI uses); falls back to the catalog plus one health query per service if that endpoint is unavailable.

    Example: foundation services --json
    """
    from foundation_cli.facades.service_mesh import ServiceMesh

    run = current()
    rows_data = ServiceMesh(run.consul()).services()
    rows = [
        (
            r["name"],
            r["instances"],
            r["nodes"],
            r["checks"]["passing"],
            r["checks"]["warning"],
            r["checks"]["critical"],
            ",".join(r["tags"]),
        )
        for r in rows_data
    ]
    run.out.result(
        rows_data,
        table=(("SERVICE", "INSTANCES", "NODES", "CHECKS OK", "WARN", "CRIT", "TAGS"), rows),
    )


def register(root: typer.Typer) -> None:
    """Add this module's commands to the root app (called once by commands.app)."""
    for info in app.registered_commands:
        root.registered_commands.append(info)
