"""The Foundation test lab: real Consul agents and real SSH hosts in network namespaces.

    from tests.lab import Lab, Host, ConsulAgent, ConsulCluster, start_agent

pytest fixtures wrapping these live in ``tests/conftest.py``. ``python -m
tests.lab cleanup`` removes what a killed run left behind (the next lab start
does it too).
"""

from tests.lab.netns import Host, Lab

__all__ = ["Host", "Lab"]
