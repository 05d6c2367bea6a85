"""Logging in and out of the admin pages, and the guard every admin request passes.

The guard, in order: find the session (cookie -> ``admin_sessions``); send a
request without one to the login page (GET) or refuse it (403, anything
else); check the CSRF nonce of every POST, the login form's included (the
nonce and cookie pattern of ``consent_site.security``, bound to the session
once there is one, so a nonce dies with its session); mark every answer
``no-store``; and answer errors with the admin's own page.

The session cookie: a random value (``career_relay.ledger.admin_users``), HttpOnly,
SameSite=Strict, and Secure with the ``__Host-`` prefix when the site is
served over HTTPS; no Max-Age, so it ends with the browser too, and the
server ends it after ``SESSION_LIFETIME`` or at logout whatever the browser keeps.
"""

from __future__ import annotations

import asyncio
import logging
import math

from aiohttp import web
from aiohttp.typedefs import Handler

from career_relay.errors import LedgerUnavailable
from career_relay.ledger import AdminUsers, check_password
from consent_site.admin import ADMIN, NO_STORE, TOKEN, USER, BadField, render, see_other
from consent_site.security import CsrfError, client_address

log = logging.getLogger("career_relay.admin")

LOGIN = "/admin/login"
_PUBLIC = {"/admin/login"}
MESSAGES = {
    "wrong": "メールアドレスまたはパスワードが正しくありません。",
    "wait": "ログインの失敗が続いたため、{seconds}秒後にもう一度お試しください。",
    "bye": "ログアウトしました。",
}


#: Seconds a 503 asks the browser to wait while the ledger is away (as consent_site.app).
RETRY_AFTER_UNAVAILABLE = 30


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(NO_STORE)
            raise
        response = _error(request, exc.status,
                          exc.problem if isinstance(exc, BadField) else None)
    except LedgerUnavailable as exc:
        # The database is away (SPEC 12), as on the candidate's pages: a 503 and when to
        # come back, not an unexpected error's 500 and traceback per request.
        log.warning("the ledger is unavailable serving %s %s: %s", request.method,
                    request.path, exc)
        response = _error(request, 503)
        response.headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        response = _error(request, 500)
    response.headers.update(NO_STORE)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    admin = request.app[ADMIN]
    token = request.cookies.get(admin.cookie, "")
    user = await admin.run(admin.users.session, token) if token else None
    if user is not None:
        request[USER] = user
        request[TOKEN] = token
    public = request.path in _PUBLIC
    if user is None and not public:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther(LOGIN)
        raise web.HTTPForbidden()
    if request.method == "POST":
        form = await request.post()
        binding = AdminUsers.session_key(token) if user is not None else "admin-login"
        nonce = str(form.get("csrf", ""))
        try:
            admin.csrf.check(request, nonce, binding)
        except CsrfError:
            raise web.HTTPForbidden() from None
        if public and not admin.login_nonces.use(nonce):
            raise web.HTTPForbidden()  # a login form's nonce serves one POST
    return await handler(request)


def _error(request: web.Request, status: int, problem: str | None = None) -> web.Response:
    """The error page; ``problem`` (a ``BadField``'s) says which field was wrong and how."""
    titles = {400: "リクエストが正しくありません", 403: "この操作はできません",
              404: "ページが見つかりません", 405: "この方法では使えません",
              409: "処理できませんでした", 503: "ただいま台帳に接続できません"}
    return render(request, "error.html", status=status,
                  title=titles.get(status, "エラーが発生しました"),
                  text=problem or ("数分後にもう一度お試しください。" if status == 503 else
                                   "ページが存在しないか、このアカウントでは表示・操作できません。"))


# -- the views ------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    if request.get(USER) is not None:
        raise web.HTTPSeeOther("/admin/")
    message = MESSAGES["bye"] if request.query.get("bye") else None
    return render(request, "login.html", message=message, email="")


async def login(request: web.Request) -> web.StreamResponse:
    """Throttle, then the password on its own thread, then the session on the ledger's."""
    admin = request.app[ADMIN]
    form = await request.post()
    email = str(form.get("email", ""))[:254]
    password = str(form.get("password", ""))[:1024]
    address = client_address(request, admin.settings.site.trusted_proxies) or ""
    wait = admin.throttle.begin(email, address)
    if wait > 0:  # no argon2, nothing counted: the same answer for every email
        log.info("admin login refused: throttled for %d s", math.ceil(wait))
        return _refused(request, email, "wait", math.ceil(wait))
    try:
        found = await admin.run(admin.users.find, email)
        user = await asyncio.get_running_loop().run_in_executor(
            admin.argon2, check_password, found, password)
    except BaseException:
        admin.throttle.failed(email, address)  # the slot is given back, counted
        raise
    if user is None:
        admin.throttle.failed(email, address)
        log.info("admin login refused (wrong)")
        return _refused(request, email, "wrong")
    admin.throttle.succeeded(email, address)
    token = await admin.run(admin.users.start_session, user)
    log.info("admin login: user %d", user.id)
    response = see_other("/admin/")
    if request.get(TOKEN):  # a second login from a logged-in browser ends the first session
        await admin.run(admin.users.end_session, request[TOKEN])
    response.set_cookie(admin.cookie, token, path="/", secure=admin.https,
                        httponly=True, samesite="Strict")
    return response


def _refused(request: web.Request, email: str, why: str, seconds: int = 0) -> web.Response:
    status = 429 if why == "wait" else 403
    response = render(request, "login.html", status=status, email=email, message=None,
                      error=MESSAGES[why].format(seconds=seconds))
    if seconds:
        response.headers["Retry-After"] = str(seconds)  # RFC 9110 10.2.3
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    await admin.run(admin.users.end_session, request[TOKEN])
    response = see_other(f"{LOGIN}?bye=1")
    response.del_cookie(admin.cookie, path="/", secure=admin.https, httponly=True,
                        samesite="Strict")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
