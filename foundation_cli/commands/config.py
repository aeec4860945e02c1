"""`foundation config …`: cluster-wide config in KV and `config show` (the resolved foundation.yaml)."""

from __future__ import annotations

from typing import Optional

import typer

from foundation_cli.commands.common import command, current, group
from foundation_cli.commands.completion import config_keys

app = group(
    "config",
    "Cluster-wide settings (KV foundation/config/) and foundation.yaml.\n\n"
    "Example: foundation config set agent.log_level debug --cluster-wide",
)


def register(root: typer.Typer) -> None:
    """Add the `config` group to the root app."""
    root.add_typer(app, name="config", rich_help_panel="Configuration")


def _config():
    from foundation_cli.facades.config import ClusterConfig

    return ClusterConfig(current().consul())


@command(app, "set")
def set_(
    key: str = typer.Argument(
        ..., help="Config key, e.g. agent.log_level (stored at foundation/config/KEY).", autocompletion=config_keys
    ),
    value: str = typer.Argument(..., help="The value (text); '-' reads it from stdin."),
    cluster_wide: bool = typer.Option(
        False, "--cluster-wide", help="Also announce the change on the control channel (event foundation:_control)."
    ),
    cas: Optional[int] = typer.Option(
        None, "--cas", help="Only write if KEY is still at version N (0: only if unset). Default: the version read."
    ),
) -> None:
    """Set KEY to VALUE with check-and-set: a concurrent change is a conflict (exit 6), never overwritten.

    Agents apply the settings they own live: agent.log_level, singleton.lock_delay, singleton.fence_timeout, restart.backoff, restart.backoff_max, optimizer.interval, snapshot.interval, snapshot.keep (see docs/config.md). `foundation config get KEY --status` shows which nodes applied it.

    Example: foundation config set agent.log_level debug --cluster-wide --explain
    """
    import sys

    if value == "-":  # bytes: what is not UTF-8 is refused by name below, never a decoding crash
        value = sys.stdin.buffer.read().decode("utf-8", "surrogateescape").rstrip("\n")
    run = current()
    result = _config().set(key, value, cas=cas, cluster_wide=cluster_wide)
    run.out.result(result, text=None)
    version = result["version"]
    run.out.info(f"set {key} (version {version if version is not None else '?'})")
    if cluster_wide:
        run.out.info(f"announced on _control; `foundation config get {key} --status` shows which nodes applied it")


@command(app, "get")
def get(
    key: str = typer.Argument(..., help="Config key.", autocompletion=config_keys),
    status: bool = typer.Option(False, "--status", help="Show which nodes' agents have applied this version."),
) -> None:
    """Print the value of KEY (with --status: which agents applied its current version).

    Example: foundation config get agent.log_level --status
    """
    run = current()
    config = _config()
    if not status:
        entry = config.get(key)
        run.out.result(entry.to_dict(), text=entry.value)
        return
    report = config.status(key)
    rows = [(n["node"], n["state"], n.get("applied_index"), n.get("reason") or "") for n in report["nodes"]]
    run.out.result(report, table=(("NODE", "STATE", "APPLIED INDEX", "REASON"), rows))
    if not run.settings.json:
        version = report["version"] if report["version"] is not None else "unset"
        run.out.info(f"{key} version {version}: applied on {report['applied']} of {report['total']} nodes")


@command(app, "list")
def list_() -> None:
    """List the cluster-wide config keys, values and versions.

    Example: foundation config list --json
    """
    run = current()
    entries = _config().list()
    if not entries and not run.settings.json:
        run.out.info("no cluster-wide config set")
        return
    rows = [(e.key, e.value if len(e.value) <= 60 else e.value[:57] + "...", e.version) for e in entries]
    run.out.result([e.to_dict() for e in entries], table=(("KEY", "VALUE", "VERSION"), rows))


@command(app, "unset")
def unset(
    key: str = typer.Argument(..., help="Config key.", autocompletion=config_keys),
    cluster_wide: bool = typer.Option(
        False, "--cluster-wide", help="Also announce the removal on the control channel."
    ),
    cas: Optional[int] = typer.Option(None, "--cas", help="Only remove if KEY is still at version N."),
) -> None:
    """Remove KEY (check-and-set, like `config set`); agents fall back to their defaults.

    Example: foundation config unset agent.log_level --cluster-wide
    """
    run = current()
    result = _config().unset(key, cas=cas, cluster_wide=cluster_wide)
    run.out.result(result, text=None)
    run.out.info(f"removed {key}")


@command(app, "show")
def show(
    effective: bool = typer.Option(True, "--effective/--file", help="The resolved config (default) or the raw file."),
) -> None:
    """Print the resolved foundation.yaml and the mode that produced it (secrets masked).

    Example: foundation config show --effective
    """
    from foundation_cli.core import cluster_config

    run = current()
    path = cluster_config.find_config_file(run.settings.config_path)
    if not effective:
        if path is None:
            run.out.info("no foundation.yaml (mortal mode)")
            return
        run.out.line(path.read_text(encoding="utf-8").rstrip("\n"))
        return
    cfg = cluster_config.load(run.settings.config_path)
    from foundation_cli.raw.secrets import redact

    data = cfg.to_dict()
    data["hosts"] = [{k: v for k, v in h.items() if v is not None} for h in data["hosts"]]
    data = redact(data)  # acl.tokens.*, encrypt, passwords: by key, whatever the value looks like
    if run.settings.json:
        run.out.json(data)
        return
    import yaml

    run.out.line(f"# mode: {cfg.mode} (from {cfg.source or 'no file: defaults'})")
    run.out.line(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n"))
