"""Reading an API request, for every route of either API (SPEC 10, 11): the route table's
row, the JSON body (bounded, one object, no member twice) and its validation by a model
(422 naming each field).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from consent_site.api import models
from consent_site.api.core import ApiError

#: The largest request body taken (a request is a few hundred bytes).
MAX_BODY = 16 * 1024
#: What ``body`` answers for a body it refuses: each route that reads one lists them.
BODY_ERRORS: dict[int, tuple[str, type[BaseModel] | None]] = {
    400: ("Malformed: not JSON", models.Problem),
    413: ("The body is too large", models.Problem),
    415: ("The body is not application/json", models.Problem)}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One route: how aiohttp calls it and how OpenAPI describes it."""

    method: str
    path: str  # under /api/v1
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, tuple[str, type[BaseModel] | None]] = field(default_factory=dict)
    auth: bool = True
    path_params: tuple[str, ...] = ()


# -- reading the request ----------------------------------------------------------------------


async def body(request: web.Request) -> Any:
    """The JSON body: at most MAX_BODY bytes (413 beyond, counted as it arrives, whatever
    Content-Length says), UTF-8 JSON (400), one object with no member twice."""
    kind = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
    if kind.lower() != "application/json" and not kind.lower().endswith("+json"):
        raise ApiError(415, "Unsupported Media Type", "the body must be application/json")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "Content Too Large", f"the body may hold {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1 - size):
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "Content Too Large", f"the body may hold {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks).decode("utf-8"), object_pairs_hook=_no_twice)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:200] if isinstance(exc, ValueError) else \
            "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deeply"
        raise ApiError(400, "Bad Request", f"the body is not valid JSON: {reason}") from None


def _no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"member {key[:50]!r} given twice")
        found[key] = value
    return found


def valid(model: type[BaseModel], value: Any) -> Any:
    """``value`` as ``model``, or 422 naming every field that failed."""
    if not isinstance(value, dict):
        raise ApiError(422, "Unprocessable Content", "the body must be a JSON object",
                       [models.FieldError(field="(body)", message="must be a JSON object")])
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [models.FieldError(field=".".join(str(p) for p in e["loc"]) or "(body)",
                                    message=_message(e)) for e in exc.errors()]
        named = ", ".join(dict.fromkeys(e.field for e in errors))
        raise ApiError(422, "Unprocessable Content", f"invalid: {named}", errors) from None


def _message(error: Any) -> str:
    """pydantic's message without the value (it may be an address: no personal data in
    an error that a proxy or a client may log)."""
    if error["type"] == "extra_forbidden":
        return "unknown member"
    return str(error["msg"])[:200]


