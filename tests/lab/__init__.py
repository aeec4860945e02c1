"""The Foundation test lab: real Consul agents and real SSH hosts in network namespaces.

    from tests.lab import Lab, Host, ConsulAgent, ConsulCluster, start_agent
    from tests.lab.cli import foundation, bash     # run the CLI / a --dry-run script

pytest fixtures wrapping these live in ``tests/conftest.py``. ``python -m
tests.lab cleanup`` removes what a killed run left behind (the next lab start
does it too); ``python -m tests.lab status`` shows which slots are in use.
"""

from tests.lab.consul import ConsulAgent, ConsulCluster, start_agent
from tests.lab.netns import Host, Lab

__all__ = ["ConsulAgent", "ConsulCluster", "Host", "Lab", "start_agent"]
