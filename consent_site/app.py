"""The aiohttp application factory.

For now it serves the liveness probe; the candidate's pages and the admin
pages are added by their own issues.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from career_relay.settings import Settings
from career_relay.validate import parse_hostport

SETTINGS_KEY = web.AppKey("settings", Settings)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app.router.add_get("/healthz", healthz)
    return app


async def start_site(settings: Settings) -> Callable[[], Awaitable[None]]:
    """Serve the app on site.listen; returns the coroutine function that stops it."""
    host, port = parse_hostport("site.listen", settings.site.listen)
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner.cleanup
