"""How `cnnclf serve` fails: every error a JSON `{"error": "..."}` with its status, and the
bearer-token check that API routes depend on."""

from __future__ import annotations

import hmac
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cnnclf.serve.uploads import RequestError

log = logging.getLogger("cnnclf")


def add_error_handlers(app: FastAPI) -> None:
    """Answers every failure, expected or not, as `{"error": "..."}`, never as HTML."""

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return JSONResponse(
            {"error": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse({"error": problems or "invalid request"}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request, exc: ClientDisconnect):
        # Nobody reads this answer; the request log notes "(client gone)". 499 as nginx logs it.
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        # The message of an unexpected error can hold a path, a command line or a temporary
        # file's name: the client gets its type only, the console gets the rest.
        log.error(f"internal error on {request.method} {request.url.path}: {exc!r}")
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the server's console says more"},
            status_code=500,
        )


def has_token(request: Request, token: str | None) -> bool:
    """Whether `request` carries `Authorization: Bearer <token>` (always, without a token)."""
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def token_check(token: str | None):
    """A FastAPI dependency refusing requests without `Authorization: Bearer <token>`."""

    async def authorised(request: Request) -> None:  # async: no thread for a comparison
        if not has_token(request, token):
            raise RequestError(
                401,
                "missing or wrong token: send the header "
                "'Authorization: Bearer <token>' (CNNCLF_TOKEN, --token-file or --token)",
            )

    return authorised
