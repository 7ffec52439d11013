"""uvicorn's h11 HTTP protocol with the limits the search server needs at the connection level.

Added to uvicorn's own keep-alive timeout:

- a new connection must deliver a complete request head within ``head_timeout`` seconds
  (idle or slow-loris connections are closed instead of held forever);
- at most ``max_connections`` open connections; the next one gets a JSON 503 and is closed;
- raw UTF-8 (bytes >= 0x80) in the request line is percent-encoded before parsing, so
  ``/api/search?q=café`` means ``café`` (browsers send ``%C3%A9`` already);
- malformed requests get a JSON 400 (414 when the request head is too long), not plain text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 1000
_HIGH_BYTES = re.compile(rb"[\x80-\xff]")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}


def raw_json_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 JSON error response that closes the connection."""
    body = json.dumps({"error": message, "status": status}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in SECURITY_HEADERS.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedH11(H11Protocol):
    """See the module docstring; configured through the class attributes."""

    head_timeout = HEAD_TIMEOUT_S
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._request_line = True
        self._received = 0  # bytes of the current request so far
        self._refused = False
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timeout)
        if len(self.connections) > self.max_connections:
            transport.write(raw_json_response(
                503, "Service Unavailable",
                f"the server holds its maximum of {self.max_connections} connections; retry later",
            ))  # fmt: skip
            transport.close()

    def _head_timeout(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # drain what the client still sends after our error response
            return
        self._received += len(data)
        if self._request_line:
            line, nl, rest = data.partition(b"\n")
            if nl:
                self._request_line = False
            if _HIGH_BYTES.search(line):
                data = _HIGH_BYTES.sub(lambda m: b"%%%02X" % m.group()[0], line) + nl + rest
        super().data_received(data)

    def on_response_complete(self) -> None:
        self._request_line = True
        self._received = 0
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        if self._received > limit:
            self.transport.write(raw_json_response(
                414, "URI Too Long", f"the request head is over {limit} bytes; shorten the URL",
            ))  # fmt: skip
        else:
            self.transport.write(raw_json_response(400, "Bad Request", f"malformed HTTP request: {msg}"))
        # Half-close and read on for a moment: closing with unread input would reset the
        # connection and could destroy the response before the client reads it.
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(1.0, self.transport.close)
        else:
            self.transport.close()
