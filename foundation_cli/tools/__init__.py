"""Tool adapters (L3): Consul (py-consul), SSH (paramiko), mDNS (zeroconf).

Each adapter records every operation it performs as a raw operation and
translates its tool's errors into :mod:`foundation_cli.errors` at its edge.
Import them lazily: they pull in heavy libraries.
"""
