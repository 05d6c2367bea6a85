"""The OpenAPI 3.1 document of the company API (SPEC 10), built from the route table
(``views.ROUTES``: the routes aiohttp serves) and the pydantic models the handlers
validate with (their JSON Schema, draft 2020-12: OpenAPI 3.1's own dialect).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from career_relay import __version__
from consent_site.api import agency, agency_credits, models, views

ROUTES = views.ROUTES + agency.ROUTES + agency_credits.ROUTES

PREFIX = "/api/v1"
_REF = "#/components/schemas/{model}"
_COMMON = {401: "No API key, or an unknown or revoked one",
           403: "A key of the other kind (an agency's on a company route, a company's on an "
                "agency route)",
           429: "Over api.rate_limit requests a minute for this key (see Retry-After)",
           503: "The ledger is unavailable for a while (see Retry-After)"}


def document(public_url: str = "") -> dict[str, Any]:
    """The OpenAPI document (a dict, JSON-ready)."""
    wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []
    for route in ROUTES:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        wanted += [(model, "serialization") for _, model in route.responses.values()
                   if model is not None]
    wanted.append((models.Problem, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {"summary": route.summary,
                              "operationId": route.handler.__name__, "responses": {}}
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in route.path_params]
        if route.query is not None:
            schema = route.query.model_json_schema(ref_template=_REF)
            params += [{"name": name, "in": "query",
                        "required": name in schema.get("required", []), "schema": prop}
                       for name, prop in schema["properties"].items()]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": refs[(route.body, "validation")]}}}
            op["parameters"] = [*params, {
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": "The same key answers the same offer (200), when the body "
                "names no message_id.", "schema": {"type": "string", "maxLength": 255}}
                ] if route.path == "/offers" else params
        responses = dict(route.responses)
        if route.auth:
            op["security"] = [{"bearer": []}]
            responses = {status: (text, models.Problem) for status, text in _COMMON.items()
                         } | responses
        for status, (text, model) in sorted(responses.items()):
            answer: dict[str, Any] = {"description": text}
            if model is models.Problem:
                answer["content"] = {"application/problem+json": {
                    "schema": refs[(model, "serialization")]}}
            elif model is not None:
                answer["content"] = {"application/json": {
                    "schema": refs[(model, "serialization")]}}
            else:
                answer["content"] = {"application/json": {"schema": {"type": "object"}}}
            if status in (429, 503):
                answer["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                     "description": "seconds"}}
            op["responses"][str(status)] = answer
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "career-relay API", "version": __version__,
                 "description": "The company API: offers for candidates rejected by mail the "
                 "relay never sees (SPEC 10). The agency API: its forwards, and the outcomes "
                 "it reports (SPEC 11). Errors are RFC 9457 problems."},
        "servers": [{"url": public_url.rstrip("/")}] if public_url else [],
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}),
                       "securitySchemes": {"bearer": {
                           "type": "http", "scheme": "bearer",
                           "description": "A company's API key (career-relay api-key "
                           "create) or an agency's (career-relay agency-key create)."}}},
    }


def document_bytes(public_url: str = "") -> bytes:
    return json.dumps(document(public_url), ensure_ascii=False, indent=1).encode("utf-8")
