"""The facade's route table."""

from __future__ import annotations

from aiohttp import web

from . import openapi, views


def setup_routes(app: web.Application) -> None:
    """The public endpoints, as in the assignment, plus a health check and the API description."""
    app.router.add_post("/facade", views.post_message)
    app.router.add_get("/facade", views.get_messages)
    app.router.add_get("/health", views.health)
    app.router.add_get("/openapi.json", openapi.serve_openapi)
