"""Typed keys for the facade's application state."""

from __future__ import annotations

from aiohttp import web

from resilience import CallPolicy, LoopLag

from .service import FacadeService
from .settings import FacadeSettings

SETTINGS = web.AppKey("settings", FacadeSettings)
SERVICE = web.AppKey("service", FacadeService)
# Every call policy the facade uses (their breakers, limits and budgets), for tests and metrics.
POLICIES = web.AppKey("policies", list[CallPolicy])
# Whether the event loop has fallen behind (load shedding on queueing time).
LOOP_LAG = web.AppKey("loop_lag", LoopLag)
