"""Typed keys for the facade's application state."""

from __future__ import annotations

from aiohttp import web

from resilience import Settings

from .service import FacadeService

SETTINGS = web.AppKey("settings", Settings)
SERVICE = web.AppKey("service", FacadeService)
