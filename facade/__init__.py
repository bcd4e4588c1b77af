"""The facade: the public REST service (validation, UUID minting, fan-out)."""
