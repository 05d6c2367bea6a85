"""The aiohttp application factory.

For now it serves the liveness probe; the candidate's pages and the admin
pages are added by their own issues.
"""

from __future__ import annotations

from aiohttp import web

from career_relay.settings import Settings

SETTINGS_KEY = web.AppKey("settings", Settings)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app.router.add_get("/healthz", healthz)
    return app
