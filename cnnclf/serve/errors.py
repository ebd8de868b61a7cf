"""How `cnnclf serve` fails: every error a JSON `{"error": "..."}` with its status, and the
bearer-token check that API routes depend on."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnclf.serve.uploads import RequestError


def add_error_handlers(app: FastAPI) -> None:
    """Answers every failure, expected or not, as `{"error": "..."}`, never as HTML."""

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
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

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500
        )


def token_check(token: str | None):
    """A FastAPI dependency refusing requests without `Authorization: Bearer <token>`."""

    def authorised(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise RequestError(
                401,
                "missing or wrong token: send the header "
                "'Authorization: Bearer <token>' (--token / CNNCLF_TOKEN)",
            )

    return authorised
