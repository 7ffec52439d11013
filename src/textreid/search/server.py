"""A small web page and JSON API over a gallery index (standard library HTTP server).

Routes:
  GET /                       the search page (text box + result grid)
  GET /api/search?q=...&k=..  {"query", "k", "results": [{"rank", "score", "path", "url"}]}
  GET /api/info               {"count", "embed_dim", "checkpoint", "index", "max_k", ...}
  GET /image/<i>              the i-th indexed image (only indexed images; by position)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import mimetypes
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from textreid.search.index import EncoderProtocol
from textreid.search.searcher import Searcher

log = logging.getLogger(__name__)

_IMAGE_ROUTE = re.compile(r"^/image/(\d{1,12})$")
_IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


class ApiError(Exception):
    """A request error with its HTTP status, reported to the client as JSON."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SearchServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the :class:`Searcher` and the request limits."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        searcher: Searcher,
        *,
        max_query_chars: int = 500,
        max_k: int = 100,
    ) -> None:
        self.searcher = searcher
        self.max_query_chars = max_query_chars
        self.max_k = max_k
        self.page = resources.files("textreid.search").joinpath("static/index.html").read_bytes()
        super().__init__(address, SearchHandler)

    @property
    def url(self) -> str:
        """Base URL the server listens on."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"


class SearchHandler(BaseHTTPRequestHandler):
    """Serves the page, the JSON API and indexed images."""

    server: SearchServer
    server_version = "textreid-search"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", {"Cache-Control": "no-store"})

    def do_GET(self) -> None:
        """Route a GET request."""
        try:
            parts = urlsplit(self.path)
            route = parts.path
            if route in ("/", "/index.html"):
                self._send(
                    200,
                    self.server.page,
                    "text/html; charset=utf-8",
                    {
                        "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                        "script-src 'unsafe-inline'; img-src 'self'"
                    },
                )
            elif route == "/api/search":
                self._json(200, self._search(parts.query))
            elif route == "/api/info":
                self._json(200, self._info())
            elif m := _IMAGE_ROUTE.match(route):
                self._image(int(m.group(1)))
            elif route.startswith("/image/"):
                raise ApiError(
                    HTTPStatus.NOT_FOUND, "images are addressed by position: /image/<0..N-1>"
                )
            else:
                raise ApiError(
                    HTTPStatus.NOT_FOUND,
                    f"unknown route {route!r}; try /, /api/search?q=...&k=10, /api/info",
                )
        except ApiError as e:
            self._json(e.status, {"error": e.message, "status": int(e.status)})
        except Exception:  # a bug or a failing encoder: report it, keep serving
            log.exception("error while serving %s", self.path)
            self._json(500, {"error": "internal error while searching; see the server log"})

    def do_HEAD(self) -> None:
        """Same as GET without the body."""
        self.do_GET()

    def _method_not_allowed(self) -> None:
        body = json.dumps({"error": f"{self.command} is not supported; use GET", "status": 405})
        self._send(405, body.encode(), "application/json; charset=utf-8", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    def _search(self, query_string: str) -> dict[str, Any]:
        params = parse_qs(query_string, keep_blank_values=True)
        srv = self.server
        q = params.get("q", [None])[0]
        if q is None:
            raise ApiError(HTTPStatus.BAD_REQUEST, "missing query parameter q (the description)")
        q = q.strip()
        if not q:
            raise ApiError(HTTPStatus.BAD_REQUEST, "the query q is empty: describe the person")
        if len(q) > srv.max_query_chars:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                f"the query is {len(q)} characters long; the limit is {srv.max_query_chars}",
            )
        limit = min(srv.max_k, srv.searcher.count)
        k_raw = params.get("k", [str(min(10, limit))])[0].strip()
        if not re.fullmatch(r"[+-]?\d{1,9}", k_raw):
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"k must be an integer 1..{limit}, got {k_raw!r}"
            )
        k = int(k_raw)
        if not 1 <= k <= limit:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"k must be between 1 and {limit}, got {k}")
        hits = srv.searcher.search([q], k=k)[0]
        rel = srv.searcher.relative_paths
        return {
            "query": q,
            "k": k,
            "results": [
                {
                    "rank": h.rank,
                    "score": round(h.score, 6),
                    "path": rel[h.index],
                    "url": f"/image/{h.index}",
                }
                for h in hits
            ],
        }

    def _info(self) -> dict[str, Any]:
        s = self.server.searcher
        m = s.manifest
        return {
            "count": s.count,
            "embed_dim": m.embed_dim,
            "checkpoint": Path(m.checkpoint_path).name if m.checkpoint_path else None,
            "index": m.index.get("type"),
            "max_k": min(self.server.max_k, s.count),
            "max_query_chars": self.server.max_query_chars,
        }

    def _image(self, i: int) -> None:
        s = self.server.searcher
        if not 0 <= i < s.count:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no image {i}: the index holds 0..{s.count - 1}")
        path = Path(s.paths[i])
        try:
            body = path.read_bytes()
        except OSError as e:
            raise ApiError(
                HTTPStatus.NOT_FOUND, f"image {i} is indexed but unreadable now ({e.strerror})"
            ) from None
        ctype = _IMAGE_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        self._send(
            200, body, ctype or "application/octet-stream", {"Cache-Control": "max-age=3600"}
        )


def _as_searcher(index: str | Path | Searcher, encoder: EncoderProtocol | None, device: str):
    if isinstance(index, Searcher):
        return index
    return Searcher(index, encoder=encoder, device=device)


def make_server(
    index: str | Path | Searcher,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_query_chars: int = 500,
    max_k: int = 100,
    encoder: EncoderProtocol | None = None,
    device: str = "cpu",
) -> SearchServer:
    """Create (not start) the server; port 0 picks a free port (see ``server.url``)."""
    if max_query_chars < 1 or max_k < 1:
        raise ValueError("max_query_chars and max_k must be >= 1")
    searcher = _as_searcher(index, encoder, device)
    try:
        return SearchServer((host, port), searcher, max_query_chars=max_query_chars, max_k=max_k)
    except OSError as e:
        raise OSError(
            e.errno, f"cannot listen on {host}:{port} ({e.strerror}); choose another --port"
        ) from e


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    index: str | Path | Searcher,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_query_chars: int = 500,
    max_k: int = 100,
    *,
    encoder: EncoderProtocol | None = None,
    device: str = "cpu",
) -> None:
    """Serve the search page until interrupted (Ctrl-C)."""
    if not _is_loopback(host):
        log.warning(
            "serving on %s: anyone who can reach this machine can search the gallery and "
            "view its images",
            host,
        )
    server = make_server(
        index,
        host,
        port,
        max_query_chars=max_query_chars,
        max_k=max_k,
        encoder=encoder,
        device=device,
    )
    print(f"textreid: searching {server.searcher.count} images at {server.url}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
