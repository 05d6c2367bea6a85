"""The company API (SPEC 10): JSON under ``/api/v1/`` on the site's listener.

``create_api_app`` is a sub-application the site mounts at ``/api/v1``.  Modules:
``models`` (pydantic: what requests and responses may hold), ``views`` (the handlers
and the route table), ``openapi`` (the document, from both), ``core`` (the shared
state, problems, the middleware), ``limits`` (the rate limits).
"""

from __future__ import annotations

from aiohttp import web

from career_relay.ledger import Ledger
from career_relay.settings import Settings
from consent_site.api.core import API, Api, http_problem, problems

__all__ = ["API", "Api", "create_api_app", "http_problem"]


def create_api_app(settings: Settings, ledger: Ledger) -> web.Application:
    from consent_site.api import openapi

    app = web.Application(middlewares=[problems])
    api = Api(settings, ledger, openapi.document_bytes(settings.site.public_url))
    app[API] = api
    app.on_cleanup.append(api.close)
    for route in openapi.ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app
