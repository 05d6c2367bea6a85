"""The admin pages (issue 5; SPEC 6 ``/admin/...``): a sub-application mounted at ``/admin``.

Modules: ``admin_auth`` (login, logout, the guard every request passes),
``admin_views`` (dashboard, forwards, credits, reviews), ``admin_yearly`` (the yearly
human-capital report and its PDF), ``admin_charts``
(the dashboard's SVG charts, drawn by pygal), ``admin_exports`` (CSV).  This
one holds what they share: the ``Admin`` state (its own ledger connection
and one thread for every ledger call, so a commit's fsync or an argon2
verification never blocks the event loop), the ``Scope`` of a request (which
company and period, and whether this user may see it), and rendering.

Who sees what: an operator every company (a selector), a company's user only
its own; asking for another company's data answers 404, as for a company that
does not exist, so a company's user cannot even learn which ids exist.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from career_relay.ledger import (
    AdminUser,
    AdminUsers,
    Book,
    ConsentLedger,
    Ledger,
    reports,
)
from career_relay.settings import CompanySettings, Settings
from career_relay.timestamps import parse_stamp, zone, zone_label
from consent_site.login_throttle import LoginThrottle, UsedNonces
from consent_site.security import NONCE_MAX_AGE, Csrf

T = TypeVar("T")
HERE = Path(__file__).parent
#: Every admin response: never stored by a browser or a proxy (personal data, a session).
NO_STORE = {"Cache-Control": "no-store"}


class Admin:
    """What the admin views share; the ledger opens when the app starts."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self.settings = settings
        self.ledger = ledger
        self.https = settings.site.public_url.startswith("https://")
        self.csrf = Csrf(settings.secrets.signing_keys, https=self.https)
        # "__Host-": the browser takes it only Secure, from this host, for path / (RFC 6265bis).
        self.cookie = "__Host-cr_admin" if self.https else "cr_admin"
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates" / "admin"),
            autoescape=True, trim_blocks=True, lstrip_blocks=True,
            undefined=jinja2.StrictUndefined)
        self.templates.filters["local"] = self.local_time
        self.zone = zone(settings.site.time_zone)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="admin-ledger")
        # Password checks on a thread of their own: a login flood never queues the
        # ledger's reads and writes (nor the candidate pages, which have their own).
        self.argon2 = ThreadPoolExecutor(1, thread_name_prefix="admin-argon2")
        self.throttle = LoginThrottle()
        self.login_nonces = UsedNonces(NONCE_MAX_AGE + 60)

    def reload(self, settings: Settings) -> None:
        """SIGHUP: the companies of ``settings`` (ids, names, domains); templates read again."""
        if self.templates.cache is not None:
            self.templates.cache.clear()
        self.zone = zone(settings.site.time_zone)
        self.settings = settings

    def local_time(self, moment: dt.datetime | str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        """Every time on the admin pages, in ``site.time_zone`` (each page names it; the
        CSVs stay UTC).  The ledger's rows come as datetimes or as its UTC stamps."""
        if moment is None or moment == "":
            return ""
        when = parse_stamp(moment) if isinstance(moment, str) else moment
        return when.astimezone(self.zone).strftime(fmt)

    def zone_label(self) -> str:
        return zone_label(self.zone, dt.datetime.now(dt.UTC))

    async def close(self, _: web.Application) -> None:
        self._pool.shutdown(wait=True)
        self.argon2.shutdown(wait=True)

    @property
    def users(self) -> AdminUsers:
        return AdminUsers(self.ledger)

    @property
    def book(self) -> Book:
        return Book(self.ledger)

    @property
    def store(self) -> ConsentLedger:
        return ConsentLedger(self.ledger)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` on the admin's ledger thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def company(self, company_id: str) -> CompanySettings | None:
        return self.settings.company(company_id)

    def report(self, company: str, when: reports.Period) -> dict[str, Any]:
        known = self.settings.company(company)
        rows = reports.report(self.ledger, [company], when, self.settings.ledger.credit_every,
                              details=True, referral_values={
                                  company: known.referral_value if known else 0})
        return rows[0]


ADMIN = web.AppKey("admin", Admin)
USER = web.RequestKey("admin_user", AdminUser)  # the user of the request's live session
TOKEN = web.RequestKey("admin_token", str)       # that session's cookie value


def user_of(request: web.Request) -> AdminUser:
    assert USER in request, "the guard lets no request without a session through"
    return request[USER]


# -- scope: which company, which period -----------------------------------------------------


@dataclass(frozen=True)
class Scope:
    company: CompanySettings
    period: reports.Period
    since: str  # as asked ('' when not given)
    until: str

    def query(self, **extra: str) -> str:
        params = {"company": self.company.id, "since": self.since, "until": self.until, **extra}
        return urlencode({k: v for k, v in params.items() if v})


def scope(request: web.Request, source: Mapping[str, Any] | None = None) -> Scope:
    """The company and period a request asks for, if this user may see that company.

    A company's user gets their own company; naming another one answers 404.
    An operator gets the company named, or the first configured one.
    """
    admin = request.app[ADMIN]
    user = user_of(request)
    values = request.query if source is None else source
    wanted = str(values.get("company", "") or "")
    if user.company is not None:
        if wanted and wanted != user.company:
            raise web.HTTPNotFound()
        wanted = user.company
    elif not wanted and admin.settings.companies:
        wanted = admin.settings.companies[0].id
    company = admin.company(wanted)
    if company is None:
        raise web.HTTPNotFound()
    since, until = str(values.get("since", "") or ""), str(values.get("until", "") or "")
    try:
        when = reports.period(_day("since", since), _day("until", until),
                              dt.datetime.now(dt.UTC).date())
    except reports.PeriodError as exc:
        raise BadField(exc.field, _PERIOD_PROBLEMS[exc.reason]) from None
    return Scope(company, when, since, until)


class BadField(web.HTTPBadRequest):
    """A 400 whose page (``admin_auth.guard``) names the field at fault and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        self.problem = f"{field}: {problem}"
        super().__init__(text=self.problem)


_PERIOD_PROBLEMS = {
    "year": f"年は{reports.FIRST_YEAR}年から{reports.LAST_YEAR}年までで指定してください。",
    "order": "期間の終わり（until）が始まり（since）より前です。",
}


def _day(field: str, text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        raise BadField(field, "日付は YYYY-MM-DD の形で指定してください。") from None


# -- rendering ------------------------------------------------------------------------------


def render(request: web.Request, template: str, *, status: int = 200,
           **context: Any) -> web.Response:
    """An admin page: the user, the companies they may pick, and a CSRF nonce for its forms."""
    admin = request.app[ADMIN]
    user = request.get(USER)
    token = request.get(TOKEN, "")
    cookie, fresh = admin.csrf.cookie_value(request)
    binding = AdminUsers.session_key(token) if user is not None else "admin-login"
    companies = [c for c in admin.settings.companies
                 if user is not None and user.may_see(c.id)]
    # A login form's nonce is good for one POST (``login_nonces``): a random part makes
    # two forms minted in the same second differ.
    salt = "" if user is not None else secrets.token_urlsafe(9)
    body = admin.templates.get_template(template).render(
        user=user, companies=companies, csrf=admin.csrf.nonce(cookie, binding, salt),
        time_zone=admin.zone_label(), **context)
    response = web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8", headers=NO_STORE)
    if fresh:
        admin.csrf.set_cookie(response, cookie)
    return response


def see_other(location: str) -> web.Response:
    """303 (RFC 9110 15.4.4): after a POST the browser GETs the result, so a reload never
    posts again."""
    return web.Response(status=303, headers={"Location": location, **NO_STORE})


def create_admin_app(settings: Settings, ledger: Ledger) -> web.Application:
    """The admin pages over the site's ledger, to mount with ``app.add_subapp("/admin", ...)``."""
    from consent_site import (
        admin_auth,
        admin_charts,
        admin_exports,
        admin_keys,
        admin_start,
        admin_views,
        admin_yearly,
    )

    admin = Admin(settings, ledger)
    app = web.Application(middlewares=[admin_auth.guard])
    app[ADMIN] = admin
    app.on_cleanup.append(admin.close)
    admin_auth.add_routes(app)
    admin_views.add_routes(app)
    admin_charts.add_routes(app)
    admin_exports.add_routes(app)
    admin_keys.add_routes(app)
    admin_start.add_routes(app)
    admin_yearly.add_routes(app)
    return app
