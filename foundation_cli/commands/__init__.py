"""Commands: thin Typer groups. A command parses, calls a facade, hands the result to the output.

Modules here import only typer and Foundation's light modules at import time;
facades and tool adapters are imported inside command bodies so that
``foundation --help`` stays fast.
"""
