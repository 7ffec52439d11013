"""The search page and JSON API over a gallery index: FastAPI on uvicorn.

Routes (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):
  GET /                        the search page (text box, result grid, "more like this", viewer)
  GET /api/search?q=...&k=..   {"query", "k", "ignored_words", "results": [hit]}
  GET /api/similar?i=...&k=..  {"i", "path", "k", "results": [hit]}: images like image i, itself left out
  GET /api/info                {"count", "embed_dim", "checkpoint", "index", "max_k", ...}
  GET /image/<i>               the i-th indexed image (only indexed images; by position)

A hit is ``query.hit_json``: ``{"rank", "score", "index", "path", "url"}``. Every error,
whatever its status, is JSON ``{"error": message, "status": code}``; every response carries
``X-Content-Type-Options: nosniff`` and a Content-Security-Policy.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from textreid.search.errors import QueryError, SearchError, UnknownWordsError
from textreid.search.index import EncoderProtocol
from textreid.search.middleware import Guard
from textreid.search.protocol import GuardedH11
from textreid.search.query import check_query, hit_json, parse_k, parse_position
from textreid.search.searcher import Hit, Searcher

log = logging.getLogger(__name__)

BACKLOG = 2048  # pending connections the kernel queues (http.server had 5)
KEEP_ALIVE_S = 5  # idle keep-alive connections are closed after this
MAX_IN_FLIGHT = 256  # requests handled at once by the app (then 503 JSON)
_IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}


class PortInUseError(OSError):
    """The port asked for is taken, or cannot be listened on (the message names host and port)."""


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any):
    return JSONResponse({"error": message, "status": status, **extra}, status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = (
                f"no route {request.url.path!r}; try /, /api/search?q=...&k=10, "
                "/api/similar?i=0&k=10, /api/info, /image/<0..N-1>, /docs"
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not supported here; use GET"
        return _error(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, f"invalid request: {where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(UnknownWordsError)
    async def unknown(request: Request, exc: UnknownWordsError) -> JSONResponse:
        return _error(400, str(exc), unknown_words=exc.words)

    @app.exception_handler(SearchError)
    async def refused(request: Request, exc: SearchError) -> JSONResponse:
        return _error(400, str(exc))


def _add_page_routes(app: FastAPI) -> None:
    """The search page and its script (served from the package, so CSP can forbid inline code)."""
    page = resources.files("textreid.search").joinpath("static/index.html").read_bytes()
    script = resources.files("textreid.search").joinpath("static/app.js").read_bytes()

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> Response:
        return HTMLResponse(page)

    @app.api_route("/static/app.js", methods=["GET", "HEAD"], include_in_schema=False)
    def app_js() -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8")


def _add_api_routes(app: FastAPI, searcher: Searcher, limit: int, max_query_chars: int) -> None:
    """The JSON API; ``limit`` is the largest k."""

    def results(hits: list[Hit]) -> list[dict[str, Any]]:
        root = searcher.manifest.root
        return [hit_json(h, root, url=f"/image/{h.index}") for h in hits]

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """What is indexed and the request limits."""
        m = searcher.manifest
        return {
            "count": searcher.count, "embed_dim": m.embed_dim,
            "checkpoint": Path(m.checkpoint_path).name if m.checkpoint_path else None,
            "index": m.index.get("type"), "max_k": limit, "max_query_chars": max_query_chars,
        }  # fmt: skip

    @app.get("/api/search")
    def search(
        q: Annotated[str | None, Query(description="the description of the person")] = None,
        k: Annotated[str | None, Query(description="number of results, 1..max_k (default 10)")] = None,
    ) -> dict[str, Any]:
        """The k gallery images that best match a description; words the model does not know
        are listed in ``ignored_words`` (a query with no known word is refused)."""
        if q is None:
            raise QueryError("missing query parameter q (the description)")
        query = check_query(q, max_chars=max_query_chars)
        kk = parse_k(k, limit) if k is not None else min(10, limit)
        ignored = searcher.ignored_words(query)
        hits = searcher.search([query], k=kk)[0]
        return {"query": query, "k": kk, "ignored_words": ignored, "results": results(hits)}

    @app.get("/api/similar")
    def similar(
        i: Annotated[str | None, Query(description="position of a gallery image (0..N-1)")] = None,
        k: Annotated[str | None, Query(description="number of results, 1..max_k (default 10)")] = None,
    ) -> dict[str, Any]:
        """More like this person: the k images nearest to image i's stored embedding; image i
        itself is left out of the results."""
        if i is None:
            raise QueryError("missing query parameter i (the position of a gallery image)")
        pos = parse_position(i, searcher.count)
        most = min(limit, searcher.count - 1)
        kk = parse_k(k, most) if k is not None else min(10, most)
        hits = searcher.similar(pos, k=kk)
        return {"i": pos, "path": searcher.relative_paths[pos], "k": kk, "results": results(hits)}


def _add_image_route(app: FastAPI, searcher: Searcher) -> None:
    """``/image/<i>``: indexed images by position only, each re-checked to lie inside the root."""

    @app.api_route("/image/{i:int}", methods=["GET", "HEAD"], include_in_schema=False)
    def image(i: int) -> Response:
        try:
            path = searcher.image_file(i)
        except QueryError as e:
            return _error(404, str(e))
        if not path.is_file():
            return _error(404, f"image {i} is indexed but no longer readable")
        ctype = _IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=ctype, headers={"Cache-Control": "max-age=3600"})


def create_app(
    searcher: Searcher, *, max_query_chars: int = 500, max_k: int = 100,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> FastAPI:  # fmt: skip
    """The ASGI application: page, API and images of one :class:`Searcher`."""
    if max_query_chars < 1 or max_k < 1:
        raise ValueError("max_query_chars and max_k must be >= 1")
    app = FastAPI(
        title="textreid search",
        description="Describe a person, find them in the indexed gallery.",
        version="1",
    )
    _add_page_routes(app)
    _add_api_routes(app, searcher, min(max_k, searcher.count), max_query_chars)
    _add_image_route(app, searcher)
    _add_error_handlers(app)
    app.add_middleware(Guard, max_in_flight=max_in_flight)
    return app


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is already in use; choose another --port") from e
        raise PortInUseError(f"cannot listen on {host}:{port} ({e.strerror or e})") from e


class SearchServer:
    """uvicorn serving :func:`create_app` on an already bound socket (port 0: a free port)."""

    def __init__(self, searcher: Searcher, host: str, port: int, **limits: Any) -> None:
        self.searcher = searcher
        self.app = create_app(searcher, **limits)
        self.socket = _listen(host, port)
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            self.app, http=GuardedH11, backlog=BACKLOG, timeout_keep_alive=KEEP_ALIVE_S,
            log_level="warning", access_log=False,
            lifespan="off", server_header=False,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL the server listens on."""
        host, port = self.server_address
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C when run in the main thread)."""
        self._server.run(sockets=[self.socket])

    def start(self) -> SearchServer:
        """Serve from a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)
        return self

    def shutdown(self) -> None:
        """Stop serving (from another thread) and close the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()

    server_close = shutdown


def make_server(
    index: str | Path | Searcher, host: str = "127.0.0.1", port: int = 8000, *,
    max_query_chars: int = 500, max_k: int = 100, encoder: EncoderProtocol | None = None,
    device: str = "cpu",
) -> SearchServer:  # fmt: skip
    """Create (not start) the server; port 0 picks a free port (see ``server.url``)."""
    searcher = index if isinstance(index, Searcher) else Searcher(index, encoder=encoder, device=device)
    return SearchServer(searcher, host, port, max_query_chars=max_query_chars, max_k=max_k)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    index: str | Path | Searcher, host: str = "127.0.0.1", port: int = 8000,
    max_query_chars: int = 500, max_k: int = 100, *, encoder: EncoderProtocol | None = None,
    device: str = "cpu",
) -> None:  # fmt: skip
    """Serve the search page until interrupted (Ctrl-C)."""
    if not _is_loopback(host):
        log.warning(
            "serving on %s: anyone who can reach this machine can search the gallery and "
            "view its images", host,
        )  # fmt: skip
    server = make_server(index, host, port, max_query_chars=max_query_chars, max_k=max_k,
                         encoder=encoder, device=device)  # fmt: skip
    print(f"textreid: searching {server.searcher.count} images at {server.url}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.socket.close()
