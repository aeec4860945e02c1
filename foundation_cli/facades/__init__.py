"""Facades (L2): intention-revealing operations built from core and tool calls.

Facades return plain data (dicts, dataclasses); they never print.
"""
