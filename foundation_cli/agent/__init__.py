"""The node agent (``foundation agent run``): one long-running daemon per node.

It is a set of independent *tasks* (see :mod:`.tasks`), each a function
``run(ctx: AgentContext, stop: threading.Event) -> None`` started in its own
thread and expected to return promptly once ``stop`` is set.
"""
