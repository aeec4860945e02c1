"""The static command index: what ``foundation --help`` shows and where each command lives.

Kept apart from :mod:`.app` (which re-exports these names) so the root help
(:mod:`.root_help`) can read it without importing the entry point.
"""

HELP = """\
Turn a few machines into a Consul cluster and run things on it, showing every raw operation.

Example: [cyan]foundation start-singleton clock --explain -- sleep 1000[/cyan]
"""

# Global options go before or after the command; listed compactly to keep this help on one screen.
GLOBALS_HELP = (
    "Global options: --explain (show each raw operation) · --dry-run (print the writes as a script) · "
    "--json · --consul-addr · --token · -c/--config · --no-color · -q · -v (man foundation)."
)

# name: (module under foundation_cli.commands, panel in `foundation --help`, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "up": ("cluster", "Cluster", "Bring the cluster up: Consul and the node agent on every host (idempotent)."),
    "down": ("cluster", "Cluster", "Stop Consul and the node agent (consul leave); data kept unless --purge."),
    "consul": ("cluster", "Cluster", "Run the real consul CLI against this cluster (address and token set for you)."),
    "ssh": ("cluster", "Cluster", "Open SSH to a node with the cluster's SSH settings."),
    "init": ("init", "Cluster", "Write a commented starter foundation.yaml (mortal, apprentice or wizard)."),
    "start-singleton": (
        "placement",
        "Run things",
        "Run exactly one instance of CMD in the cluster; it moves when its node fails.",
    ),
    "start-replicated": (
        "placement",
        "Run things",
        "Run one instance of CMD on every eligible node, following membership.",
    ),
    "stop": ("placement", "Run things", "Stop every instance of NAME and remove its spec, lock and status."),
    "restart": ("placement", "Run things", "Restart every instance of NAME (a singleton stays on its node)."),
    "ps": ("placement", "Run things", "List placed services: node, pid, state, health, uptime, restarts, token."),
    "logs": (
        "placement",
        "Run things",
        "Print an instance's output (stdout+stderr, as the agent logs it on its node).",
    ),
    "broadcast": (
        "channels",
        "Use the cluster",
        "Send MESSAGE to every node's listeners on CHANNEL (a Consul user event).",
    ),
    "listen": (
        "channels",
        "Use the cluster",
        "Print messages on CHANNEL as they arrive (blocking queries on /v1/event/list).",
    ),
    "discover": ("discovery", "Use the cluster", "Find the instances of service NAME with their health."),
    "services": ("discovery", "Use the cluster", "List every service with its instance, node and check counts."),
    "status": (
        "health",
        "Use the cluster",
        "Cluster health on one screen (servers, members, services, checks, rates).",
    ),
    "metrics": ("health", "Use the cluster", "Health snapshot as Prometheus text (the numbers of `status --json`)."),
    "optimize": ("health", "Use the cluster", "Tuning recommendations, with evidence and the raw change (--explain)."),
    "advertise": ("mdns", "Cluster", 'Announce this machine on mDNS ("bootstrap me") until stopped.'),
    "discover-hosts": (
        "mdns",
        "Cluster",
        "List machines answering on the LAN (mDNS) and whose cluster they are in.",
    ),
    "drain": ("day2", "Cluster", "Move everything off NODE and keep it empty (maintenance) until `undrain`."),
    "undrain": ("day2", "Cluster", "Let NODE run things again (deletes the drain mark; maintenance ends)."),
    "exec": ("day2", "Cluster", "Run CMD on the chosen nodes over SSH, in parallel; a table of results."),
    "upgrade": ("day2", "Cluster", "Rolling restart or upgrade: followers, then the leader, then clients."),
    "config": ("config", "Cluster", "Cluster-wide settings (KV foundation/config/) and foundation.yaml."),
    "agent": ("agent", "Cluster", "The per-node Foundation agent (started on every node by `foundation up`)."),
    "snapshot": ("day2", "Cluster", "Save, restore and list Consul snapshots (KV, sessions, catalog, ACLs)."),
    "kv": ("kv", "Use the cluster", "Read and write plain Consul KV under foundation/kv/."),
}


def epilog() -> str:
    """The root help's epilog: the global options, then the exit codes."""
    from foundation_cli.errors import EXIT_CODES_HELP

    return GLOBALS_HELP + "\n\n" + EXIT_CODES_HELP
