"""Raw operations: what Foundation actually sends to Consul, SSH hosts, mDNS and local processes.

Adapters record operations where they happen (:mod:`.recorder`); one module
renders them (:mod:`.render`); secrets are masked on the way out (:mod:`.secrets`).
"""

from foundation_cli.raw.operation import Kind, RawOperation
from foundation_cli.raw.recorder import Recorder, current_recorder, use_recorder

__all__ = ["Kind", "RawOperation", "Recorder", "current_recorder", "use_recorder"]
