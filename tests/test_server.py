"""The search web server (FastAPI on uvicorn), over real HTTP: page, JSON API, "more like this",
images, JSON errors for every status, security headers, limits and timeouts."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from search_fakes import ColourEncoder, make_gallery, pair_query
from textreid.search import protocol
from textreid.search.index import build_index
from textreid.search.searcher import Searcher
from textreid.search.server import PortInUseError, SearchServer, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[SearchServer, dict, Path]]:
    tmp = tmp_path_factory.mktemp("srv")
    gallery = make_gallery(tmp / "g")
    build_index(ColourEncoder(), tmp / "g", tmp / "idx", progress=False)
    srv = make_server(Searcher(tmp / "idx", encoder=ColourEncoder()), port=0,
                      max_query_chars=60, max_k=8).start()
    try:
        yield srv, gallery, tmp / "g"
    finally:
        srv.shutdown()


def raw(srv: SearchServer, request: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send bytes verbatim (no client-side normalisation); parse the response."""
    with socket.create_connection(srv.server_address, timeout=timeout) as s:
        s.sendall(request)
        resp = http.client.HTTPResponse(s, method=request.split(b" ", 1)[0].decode())
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def get(srv: SearchServer, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    return raw(srv, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())


def get_json(srv: SearchServer, path: str, method: str = "GET") -> tuple[int, dict]:
    status, headers, body = get(srv, path, method)
    assert headers["content-type"].startswith("application/json")
    assert headers["x-content-type-options"] == "nosniff"
    return status, json.loads(body)


def test_binds_to_localhost_by_default(server) -> None:
    srv, _, _ = server
    assert srv.server_address[0] == "127.0.0.1" and srv.url.startswith("http://127.0.0.1:")


def test_page_info_docs_and_security_headers(server) -> None:
    srv, _, _ = server
    status, headers, body = get(srv, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in headers["content-security-policy"]
    page = body.decode()
    assert 'id="q"' in page and 'id="results"' in page and 'id="viewer"' in page
    status, _, js = get(srv, "/static/app.js")
    assert status == 200 and b"/api/search" in js and b"/api/similar" in js
    status, info = get_json(srv, "/api/info")
    assert status == 200 and info["count"] == 15 and info["max_k"] == 8
    assert info["embed_dim"] == 6 and info["index"] == "flat"
    status, headers, body = get(srv, "/openapi.json")
    schema = json.loads(body)
    assert status == 200 and {"/api/search", "/api/similar", "/api/info"} <= set(schema["paths"])
    status, headers, body = get(srv, "/docs")
    assert status == 200 and b"swagger" in body.lower()


def test_search_api_returns_ranked_results_with_image_urls(server) -> None:
    srv, gallery, root = server
    status, data = get_json(srv, "/api/search?q=" + quote(pair_query("red", "black")) + "&k=3")
    assert status == 200 and data["ignored_words"] == []
    assert data["query"] == pair_query("red", "black") and data["k"] == 3
    res = data["results"]
    assert [r["rank"] for r in res] == [1, 2, 3]
    assert res[0]["path"] == gallery[("red", "black")].relative_to(root).as_posix()
    assert res[0]["score"] >= res[1]["score"] >= res[2]["score"]
    assert res[0]["url"] == f"/image/{res[0]['index']}"
    status, headers, body = get(srv, res[0]["url"])
    assert status == 200 and body == gallery[("red", "black")].read_bytes()
    assert headers["content-type"].startswith("image/") and headers["x-content-type-options"] == "nosniff"
    # Without k: 10, capped at max_k (8 here).
    status, data = get_json(srv, "/api/search?q=" + quote(pair_query("blue", "yellow")))
    assert status == 200 and data["k"] == 8 and len(data["results"]) == 8


def test_unknown_words_are_refused_or_reported(server) -> None:
    srv, gallery, root = server
    status, data = get_json(srv, "/api/search?q=zzzz%20qqqq&k=3")
    assert status == 400 and "'zzzz', 'qqqq'" in data["error"] and data["unknown_words"] == ["zzzz", "qqqq"]
    status, data = get_json(srv, "/api/search?q=" + quote("!!! ???"))
    assert status == 400 and "no words" in data["error"]
    status, data = get_json(srv, "/api/search?q=" + quote("red and black blorp") + "&k=1")
    assert status == 200 and data["ignored_words"] == ["blorp"]
    assert data["results"][0]["path"] == gallery[("red", "black")].relative_to(root).as_posix()


def test_raw_utf8_in_the_request_line_is_read_as_utf8(server) -> None:
    srv, _, _ = server
    status, _, body = raw(srv, "GET /api/search?q=red%20black%20café&k=1 HTTP/1.1\r\nHost: x\r\n"
                               "Connection: close\r\n\r\n".encode())
    data = json.loads(body)
    assert status == 200 and data["query"] == "red black café" and data["ignored_words"] == ["café"]


def test_more_like_this(server) -> None:
    srv, gallery, root = server
    i = srv.searcher.image_position(gallery[("green", "white")])
    status, data = get_json(srv, f"/api/similar?i={i}&k=5")
    assert status == 200 and data["i"] == i and data["k"] == 5
    assert data["path"] == gallery[("green", "white")].relative_to(root).as_posix()
    assert i not in [r["index"] for r in data["results"]]  # the image itself is left out
    assert [r["index"] for r in data["results"]] == [h.index for h in srv.searcher.similar(i, 5)]
    status, data = get_json(srv, f"/api/similar?i={i}")
    assert status == 200 and data["k"] == 8


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/api/search", 400, "missing query parameter q"),
        ("/api/search?q=", 400, "empty"),
        ("/api/search?q=%20%20&k=3", 400, "empty"),
        ("/api/search?q=%00", 400, "empty"),
        ("/api/search?q=" + "red%20" * 20, 400, "limit is 60"),
        ("/api/search?q=red&k=abc", 400, "k must be an integer"),
        ("/api/search?q=red&k=2.5", 400, "k must be an integer"),
        ("/api/search?q=red&k=0", 400, "between 1 and 8"),
        ("/api/search?q=red&k=9", 400, "between 1 and 8"),
        ("/api/search?q=red&k=99999999999999999999", 400, "k must be an integer"),
        ("/api/similar", 400, "missing query parameter i"),
        ("/api/similar?i=15", 400, "no image '15': the index holds images 0..14"),
        ("/api/similar?i=-1", 400, "no image '-1'"),
        ("/api/similar?i=x", 400, "no image 'x'"),
        ("/api/similar?i=0&k=9", 400, "between 1 and 8"),
        ("/nope", 404, "no route '/nope'"),
        ("/api/searchx?q=red", 404, "no route"),
        ("/api/search?q=" + "a" * 9000, 414, "limit is 8192"),
    ],
)
def test_bad_requests_get_json_errors(server, path: str, status: int, fragment: str) -> None:
    srv, _, _ = server
    got, data = get_json(srv, path)
    assert got == status and data["status"] == status and fragment in data["error"]


def test_other_methods_and_malformed_requests_get_json(server) -> None:
    srv, _, _ = server
    status, headers, body = get(srv, "/api/search?q=red", method="POST")
    assert status == 405 and "GET" in headers["allow"] and "use GET" in json.loads(body)["error"]
    status, headers, body = raw(srv, b"BLAH\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json"
    assert "malformed" in json.loads(body)["error"]
    status, headers, body = raw(srv, b"GET /api/search?q=" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
    assert status == 414 and json.loads(body)["status"] == 414
    status, headers, _ = get(srv, "/image/0", method="HEAD")
    assert status == 200 and headers["content-type"].startswith("image/")


@pytest.mark.parametrize(
    "path",
    [
        "/image/../../etc/passwd",
        "/image/..%2F..%2Fetc%2Fpasswd",
        "/image/%2e%2e/%2e%2e/etc/passwd",
        "/image/-1",
        "/image/15",
        "/image/999999",
        "/image/99999999999999999999999",
        "/image/1.0",
        "/image/0/../../../etc/passwd",
        "/image/",
        "/image/0x1",
        "/../../etc/passwd",
        "//etc/passwd",
    ],
)
def test_only_indexed_images_are_served(server, path: str) -> None:
    srv, _, _ = server
    status, _, body = get(srv, path)
    assert status == 404
    assert b"root:" not in body and json.loads(body)["error"]


def test_a_link_swapped_after_loading_is_not_followed(tmp_path: Path) -> None:
    make_gallery(tmp_path / "g")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", progress=False)
    s = Searcher(tmp_path / "idx", encoder=ColourEncoder())
    target = Path(s.paths[0])
    target.unlink()
    target.symlink_to("/etc/passwd")
    srv = make_server(s, port=0).start()
    try:
        status, _, body = get(srv, "/image/0")
        assert status == 404 and b"root:" not in body and b"outside the index root" in body
    finally:
        srv.shutdown()


def test_encoder_failure_is_a_500_and_the_server_keeps_serving(server) -> None:
    srv, _, _ = server

    def boom(texts, batch_size=256):
        raise RuntimeError("model exploded")

    good = srv.searcher.encoder.encode_text
    srv.searcher.encoder.encode_text = boom
    try:
        got, data = get_json(srv, "/api/search?q=red")
        assert got == 500 and "internal error" in data["error"]
    finally:
        srv.searcher.encoder.encode_text = good
    got, _ = get_json(srv, "/api/search?q=red")
    assert got == 200


def test_port_in_use_names_the_port(server) -> None:
    srv, _, _ = server
    port = srv.server_address[1]
    with pytest.raises(PortInUseError, match=rf"port {port} on 127.0.0.1 is already in use"):
        make_server(srv.searcher, port=port)


def test_a_silent_connection_is_closed(server, monkeypatch) -> None:
    srv, _, _ = server
    monkeypatch.setattr(protocol.GuardedH11, "head_timeout", 0.3)
    with socket.create_connection(srv.server_address, timeout=5) as s:
        t0 = time.perf_counter()
        s.sendall(b"GET /api/in")  # an incomplete request head, then silence
        assert s.recv(100) == b""  # closed by the server
        assert time.perf_counter() - t0 < 3
    assert get_json(srv, "/api/info")[0] == 200
