"""Foundation: a small cluster from a handful of machines, on real Consul, SSH and mDNS.

Every command is a thin facade over a real tool and can show the raw
operation it performs (``--explain``) or would perform (``--dry-run``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
