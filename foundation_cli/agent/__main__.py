"""``python3 -m foundation_cli.agent``: the node agent's entry on a host (no Typer/click on this path).

This is what ``foundation up`` starts on every node. It must run on the host's own Python, which
may be as old as 3.9 (Debian 11, RHEL 9, Raspberry Pi OS bullseye): only the standard library's
argparse here, and nothing imported below needs a newer Python at runtime.
``foundation agent run`` (the CLI) runs the same :class:`~foundation_cli.agent.runner.Agent`.
"""

from __future__ import annotations

import argparse
import sys

MIN_PYTHON = (3, 9)


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < MIN_PYTHON:
        print(
            f"foundation agent: Python {sys.version_info[0]}.{sys.version_info[1]} is too old "
            f"(needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+)",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(
        prog="python3 -m foundation_cli.agent",
        description="Run the Foundation node agent in the foreground until SIGTERM.",
    )
    parser.add_argument("--node", default=None, help="this node's Consul node name (env FOUNDATION_NODE)")
    parser.add_argument("--explain", action="store_true", help="log every raw Consul request")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)

    import os

    from foundation_cli.agent.runner import Agent
    from foundation_cli.errors import FoundationError
    from foundation_cli.settings import resolve

    try:
        settings = resolve(explain=args.explain, verbose=args.verbose, argv=["agent", "run"])
        node = args.node or os.environ.get("FOUNDATION_NODE") or None
        return Agent(settings, node=node, explain=args.explain, verbose=args.verbose).run()
    except FoundationError as exc:
        print(f"foundation agent: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""), file=sys.stderr)
        return int(exc.exit_status)


if __name__ == "__main__":
    sys.exit(main())
