"""Errors as OpenAI's API reports them: `{"error": {"message", "type", "param", "code"}}`, the
shape OpenAI's clients read to raise their typed errors (`BadRequestError`, `RateLimitError`...).
Every failure uses it: `APIError`s, FastAPI's validation errors, unknown routes, and anything
unexpected (logged here, never sent to the client as a traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("gptscratch")

# OpenAI's error types by status code.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
          503: "server_error", 500: "server_error"}


class APIError(Exception):
    """A request the server refuses, with its HTTP status and the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.message, exc.param, exc.code),
                        status_code=exc.status)


def _describe_validation(exc: RequestValidationError) -> tuple[int, str, str | None]:
    """Status, message and field of FastAPI's validation error: malformed JSON is a 400, a
    field of the wrong type or a missing one a 422 naming the field."""
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return 400, "the request body is not valid JSON", None
    location = [str(p) for p in first.get("loc", ())][1:]  # after "body"
    message = str(first.get("msg", "invalid request"))
    if not location:
        return 422, f"the request body is invalid: {message}", None
    # The param is the top-level field; the message gives the path inside it.
    return 422, f"'{'.'.join(location)}': {message}", location[0]


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response OpenAI-shaped."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, param = _describe_validation(exc)
        return JSONResponse(error_body(status, message, param), status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = (f"no route {request.method} {request.url.path}" if exc.status_code == 404
                   else str(exc.detail))
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error serving %s %s", request.method, request.url.path)
        return JSONResponse(error_body(500, "internal server error; see the server's log"),
                            status_code=500)
