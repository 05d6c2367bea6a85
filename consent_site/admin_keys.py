"""The admin pages' API keys (SPEC 10): a company's own keys, created (the key shown once,
on the page the POST answers, never again), listed and revoked.

A company's user manages its own company's keys; an operator any company's (the
selector).  Another company's key answers 404, as everywhere on these pages.  Every POST
carries the CSRF nonce (``admin_auth.guard`` checks it before these views run).
"""

from __future__ import annotations

from aiohttp import web

from career_relay.ledger import ApiKeys
from consent_site.admin import ADMIN, Scope, render, scope, see_other

NAME_MAX = 100


def _keys(request: web.Request) -> ApiKeys:
    return ApiKeys(request.app[ADMIN].ledger)


async def _page(request: web.Request, s: Scope, *, created: str | None = None,
                status: int = 200) -> web.Response:
    admin = request.app[ADMIN]
    rows = await admin.run(_keys(request).list, s.company.id)
    done = "APIキーを無効にしました。" if request.query.get("revoked") else None
    return render(request, "api_keys.html", page="api_keys", status=status, rows=rows,
                  created=created, done=done, name_max=NAME_MAX, scope=s, q=s.query(),
                  item_labels={}, api_base=admin.settings.site.public_url.rstrip("/"))


async def api_keys(request: web.Request) -> web.StreamResponse:
    return await _page(request, scope(request))


async def create(request: web.Request) -> web.StreamResponse:
    """The key is in this response only (no redirect: a redirect's page could not show it
    without keeping it somewhere); the page is ``no-store`` like every admin page."""
    admin = request.app[ADMIN]
    form = await request.post()
    s = scope(request, form)
    name = str(form.get("name", ""))[:NAME_MAX]
    _, key = await admin.run(_keys(request).create, s.company.id, name)
    return await _page(request, s, created=key)


async def revoke(request: web.Request) -> web.StreamResponse:
    admin = request.app[ADMIN]
    form = await request.post()
    s = scope(request, form)
    found = await admin.run(_keys(request).revoke, request.match_info["key_id"], s.company.id)
    if found is None:
        raise web.HTTPNotFound()  # no such key, or another company's
    return see_other(f"/admin/api-keys?{s.query(revoked='1')}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api-keys", api_keys)
    app.router.add_post("/api-keys", create)
    app.router.add_post("/api-keys/{key_id}/revoke", revoke)
