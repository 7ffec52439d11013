"""ASGI middleware of the search server: URL length, in-flight limit, security headers."""

from __future__ import annotations

import json
import logging
from typing import Any

from textreid.search.protocol import SECURITY_HEADERS

log = logging.getLogger(__name__)

MAX_URL_BYTES = 8192
# FastAPI's /docs page loads Swagger UI from its CDN; only that page may run those scripts.
_DOCS_CSP = (
    "default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
    "style-src 'self' https://cdn.jsdelivr.net; script-src 'self' 'unsafe-inline' "
    "https://cdn.jsdelivr.net; object-src 'none'; frame-ancestors 'none'"
)


class Guard:
    """Refuses over-long URLs (414) and more than ``max_in_flight`` concurrent requests (503),
    as JSON; adds ``X-Content-Type-Options: nosniff`` and a Content-Security-Policy to every
    response."""

    def __init__(self, app: Any, max_in_flight: int = 256) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = _DOCS_CSP if scope["path"] == "/docs" else SECURITY_HEADERS["Content-Security-Policy"]
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", csp.encode()),
        ]

        started = False

        async def send_secured(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if size > MAX_URL_BYTES:
            await _json(send_secured, 414, f"the URL is {size} bytes long; the limit is {MAX_URL_BYTES}")
            return
        if self.in_flight >= self.max_in_flight:
            await _json(send_secured, 503, "the server is busy; retry shortly", [(b"retry-after", b"1")])
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send_secured)
        except Exception:  # a bug or a failing encoder: report it, keep serving
            log.exception("error while serving %s", scope["path"])
            if started:
                raise
            await _json(send_secured, 500, "internal error while searching; see the server log")
        finally:
            self.in_flight -= 1


async def _json(send: Any, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *(headers or [])],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
