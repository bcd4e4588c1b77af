"""Scripts run from the repository root as ``python -m scripts.<name>`` (the chaos soak, ...)."""

from __future__ import annotations

from pathlib import Path

#: The redis-server configuration Procfile.cluster runs (AOF, ``appendfsync always``).
REDIS_CONF = Path(__file__).resolve().parent.parent / "redis.conf"
