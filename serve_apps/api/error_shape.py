"""One JSON shape for every error the control API answers, and the handlers that produce it.

Every 4xx/5xx body is an :class:`ErrorBody`: ``{"status", "error", "detail", "fields"}``.
``detail`` says what was wrong in words; ``fields`` lists each invalid input (location and
message, never the value sent: a camera URL may carry a password). A 5xx never carries a stack
trace: the exception is logged in the replica and the caller gets a short message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_apps.remote_call import ControlPlaneUnavailableError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FieldError(BaseModel):
    """One invalid input."""

    model_config = ConfigDict(extra="forbid")

    loc: str = Field(description="Where: body.url, query.limit, path.camera_id ...")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(extra="forbid")

    status: int
    error: str = Field(description="Short code: bad_request, unauthorized, forbidden, not_found, ...")
    detail: str = Field(description="What was wrong, in words.")
    fields: list[FieldError] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": HTTPStatus(code).phrase} for code in (400, 401, 403, 404, 422, 503)
}
"""The error answers every route documents in the OpenAPI spec."""


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_json(status: int, detail: str, fields: list[FieldError] | None = None, headers: dict[str, str] | None = None):
    body = ErrorBody(status=status, error=_code(status), detail=detail, fields=fields)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return error_json(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        FieldError(loc=_loc(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type", "")))
        for e in exc.errors()
    ]
    summary = "; ".join(f"{f.loc}: {f.msg}" for f in fields[:5])
    return error_json(422, f"invalid input: {summary}" if summary else "invalid input", fields)


RETRY_AFTER_S = 2
"""What a 503 from a control-plane hiccup tells the client to wait (a controller restart takes seconds)."""


async def _ray_error(_: Request, exc: Exception) -> JSONResponse:
    log.warning("control plane call failed: %s: %s", type(exc).__name__, exc)
    return error_json(
        503,
        f"the control plane did not answer ({type(exc).__name__}); try again",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ControlPlaneUnavailableError)
    detail = (
        f"the control plane is restarting or busy: {exc.target} gave no answer in {exc.waited_s:.0f} s; "
        f"retry after {exc.retry_after_header} s (a change with the same Idempotency-Key is applied once)"
    )
    return error_json(503, detail, headers={"Retry-After": exc.retry_after_header})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ray.exceptions.RayError, _ray_error)
    app.add_exception_handler(ControlPlaneUnavailableError, _unavailable)


async def send_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer an error straight on the ASGI channel (for middleware)."""
    response = error_json(status, detail, headers=headers)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class GuardMiddleware:
    """Outermost guard: 401 for a request without a bearer token (before its body is read), and
    a JSON 500 for any exception a route let through (logged here; no stack trace to the caller).

    Role checks (403) are the routes' dependencies; this only refuses callers with no token at
    all, so that no path but the public ones answers an anonymous caller, not even with a 404/422.
    """

    def __init__(self, app: ASGIApp, public: frozenset[str], check: Callable[[str], str | None]) -> None:
        """``check(authorization_header)`` answers None for a known caller, else why not (401)."""
        self.app = app
        self.public = public
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if path not in self.public:
            auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            why = self.check(auth)
            if why is not None:
                await send_error(send, 401, why, {"WWW-Authenticate": "Bearer"})
                return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # the last line of defence: log it, answer JSON, never a trace
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if not started:
                await send_error(send, 500, "internal error (logged by the API replica)")
