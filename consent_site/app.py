"""The aiohttp application factory: routes, templates, security headers, error pages.

``create_app`` wires the candidate's pages (``candidate``) over one ``Site``,
the admin pages (``/admin``) and the company API (``/api/v1``, ``consent_site.api``);
``start_site`` serves it on ``site.listen``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from career_relay.errors import LedgerUnavailable
from career_relay.ledger import ConsentLedger, Ledger, Rules, open_configured
from career_relay.settings import DEFAULT_AGENCY, Settings
from career_relay.validate import parse_hostport
from consent_site import admin, api, candidate, company_link, i18n, metrics, rights_views
from consent_site.candidate import SITE, PageError
from consent_site.forwarding import Forwarder
from consent_site.rights import RIGHTS
from consent_site.security import secure
from consent_site.site import Site

log = logging.getLogger("career_relay.site")

SETTINGS_KEY = web.AppKey("settings", Settings)
ADMIN_APP = web.AppKey("admin_app", web.Application)
API_APP = web.AppKey("api_app", web.Application)
#: The longest a stop waits for the requests in flight (aiohttp's shutdown_timeout).
SHUTDOWN_TIMEOUT = 30.0
#: Seconds a 503 asks the browser to wait while the ledger is unavailable.
RETRY_AFTER_UNAVAILABLE = 30
HERE = Path(__file__).parent


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


#: Browsers ask for /favicon.ico on their own, whatever the page says: without it every
#: first visit logs a 404. Read once; a day's caching, as for the stylesheet.
_FAVICON = (HERE / "static" / "favicon.ico").read_bytes()


async def favicon(request: web.Request) -> web.Response:
    return web.Response(body=_FAVICON, content_type="image/vnd.microsoft.icon",
                        headers={"Cache-Control": "public, max-age=86400"})


def templates() -> jinja2.Environment:
    # Autoescape every template: each value a candidate typed is shown escaped (SPEC 6).
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False)  # templates change with a release, not while serving
    env.filters["local_time"] = i18n.local_time
    return env


def _middleware(env: jinja2.Environment, https: bool) -> Middleware:
    """Error pages for every failure, and the security headers on every answer.

    One middleware rather than two: each layer costs every request a
    coroutine, and the candidate's page is served in about 50 us.
    """

    @web.middleware
    async def pages(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except PageError as exc:
            response = _error_page(env, exc.status, exc.key, exc.locale,
                                   exc.agency or agency(request, exc.locale))
            if exc.retry_after:
                response.headers["Retry-After"] = str(exc.retry_after)
        except LedgerUnavailable as exc:
            # The database is away (SPEC 12): a page that says so, and when to come back
            # (RFC 9110 15.6.4, 10.2.3); nothing was recorded, so the POST can be resent.
            log.warning("the ledger is unavailable serving %s: %s", request.method, exc)
            locale = i18n.choose(request.query.get("lang"),
                                 request.headers.get("Accept-Language"), "ja")
            response = _error_page(env, 503, "503", locale, agency(request, locale))
            response.headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect raised by a view
                secure(exc, https)
                raise
            if request.path.startswith("/api/"):  # no API route: a problem, not a page
                response = api.http_problem(exc)
                secure(response, https)
                return response
            locale = i18n.choose(request.query.get("lang"),
                                 request.headers.get("Accept-Language"), "ja")
            response = _error_page(env, exc.status, "generic", locale, agency(request, locale),
                                   exc.headers)
        except Exception:
            log.exception("unexpected error serving %s %s", request.method,
                          request.path.split("/c/")[0] or "/")  # never the token: it is a key
            response = _error_page(env, 500, "500", "ja", agency(request, "ja"))
        secure(response, https)
        return response

    return pages


def agency(request: web.Request, locale: str) -> str:
    """The agency an error page names where no offer says whose it is: the only one, or
    the default; with several and none the default, no name at all (never a wrong one)."""
    settings = request.app[SETTINGS_KEY]
    agencies = settings.all_agencies
    found = settings.agency_by_id(DEFAULT_AGENCY) or (agencies[0] if len(agencies) == 1
                                                       else None)
    if found is not None:
        return str(found.name)
    return "提携の人材紹介会社" if locale == "ja" else "the partner agency"


def _error_page(env: jinja2.Environment, status: int, key: str, locale: str, agency: str,
                headers: object = None) -> web.Response:
    t = i18n.TEXTS[locale]
    body = env.get_template("error.html").render(
        t=t, lang=locale, title=t[f"error_{key}_title"], status=status,
        text=t[f"error_{key}_text"].format(agency=agency))
    response = web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8", headers={"Cache-Control": "no-store"})
    allow = getattr(headers, "get", lambda _: None)("Allow")
    if status == 405 and allow:  # RFC 9110 15.5.6: a 405 names the methods that would work
        response.headers["Allow"] = allow
    return response


def create_app(settings: Settings, ledger: Ledger | None = None) -> web.Application:
    """The site over ``ledger``, the process's one ledger; without one, the app opens its
    own and closes it at cleanup."""
    own = ledger is None
    shared = open_configured(settings, wait=False) if ledger is None else ledger
    env = templates()
    https = settings.site.public_url.startswith("https://")
    app = web.Application(middlewares=[_middleware(env, https)],
                          client_max_size=64 * 1024)  # a consent form is a few KB
    app[SETTINGS_KEY] = settings
    site = Site(settings, env, shared)
    app[SITE] = site
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/static/", HERE / "static")
    candidate.add_routes(app)
    company_link.add_routes(app, settings)
    rights_views.add_routes(app)
    app[ADMIN_APP] = admin.create_admin_app(settings, shared)
    app.add_subapp("/admin", app[ADMIN_APP])
    app[API_APP] = api.create_api_app(settings, shared)
    app.add_subapp("/api/v1", app[API_APP])

    async def close(_: web.Application) -> None:
        site.close()
        if own:
            shared.close()

    app.on_cleanup.append(close)
    return app


def reload_app(app: web.Application, settings: Settings) -> None:
    """SIGHUP: the candidate's pages and the admin pages take the companies of
    ``settings`` and read their templates again; connections stay open."""
    site = app[SITE]
    # The credit rules (the companies' domains) of the one ledger the site, the admin
    # pages and the forwarding worker share.
    site.ledger.rules = Rules.from_settings(settings)
    site.reload(settings)
    app[company_link.LINKS].reload(settings)
    app[RIGHTS].reload(settings.secrets.signing_keys,
                       settings.site.public_url.startswith("https://"))
    app[ADMIN_APP][admin.ADMIN].reload(settings)
    app[API_APP][api.API].reload(settings)


class RunningSite:
    """The site on site.listen with its forwarding worker (``start_site``)."""

    def __init__(self, app: web.Application, runner: web.AppRunner, forwarder: Forwarder,
                 stop_forwarder: Callable[[], Awaitable[None]], ledger: Ledger,
                 metrics_runner: web.AppRunner | None = None) -> None:
        self.app = app
        self._runner = runner
        self._metrics_runner = metrics_runner
        self._forwarder = forwarder
        self._stop_forwarder = stop_forwarder
        self._ledger = ledger
        self._stopped = False

    def reload(self, settings: Settings) -> None:
        reload_app(self.app, settings)

    async def stop(self) -> None:
        """Stop listening, let the requests in flight finish (up to ``SHUTDOWN_TIMEOUT``),
        then let the forwarding attempts in flight finish and close the ledgers."""
        if self._stopped:
            return
        self._stopped = True
        await self._runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self._stop_forwarder()
        self._ledger.close()


async def start_site(settings: Settings) -> RunningSite:
    """Serve the app on site.listen with its forwarding worker."""
    host, port = parse_hostport("site.listen", settings.site.listen)
    # One ledger for the process: pages, admin pages, the forwarding worker, the metrics.
    ledger = open_configured(settings, wait=False)  # away: 503 pages until it is back
    app = create_app(settings, ledger)
    forwarder = Forwarder(settings, ConsentLedger(ledger))
    stop_forwarder = await forwarder.start()
    app[SITE].on_forward = forwarder.wake
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    metrics_runner = None
    if settings.site.metrics_listen:
        m_host, m_port = parse_hostport("site.metrics_listen", settings.site.metrics_listen)
        metrics_runner = web.AppRunner(metrics.create_metrics_app(settings, ledger),
                                       access_log=None)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, m_host, m_port).start()
    return RunningSite(app, runner, forwarder, stop_forwarder, ledger, metrics_runner)
