"""Core (L1): cluster config and modes, orchestration, health, optimizer, node agent logic."""
