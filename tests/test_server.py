"""The search web server: page, JSON API, image route, 4xx errors, path traversal."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from search_fakes import ColourEncoder, make_gallery, pair_query
from textreid.search.index import build_index
from textreid.search.searcher import Searcher
from textreid.search.server import SearchServer, make_server


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[SearchServer, dict, Path]]:
    gallery = make_gallery(tmp_path / "g")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", progress=False)
    srv = make_server(Searcher(tmp_path / "idx", encoder=ColourEncoder()), port=0,
                      max_query_chars=60, max_k=8)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield srv, gallery, tmp_path / "g"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def get(srv: SearchServer, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path)  # sent verbatim: no client-side path normalisation
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def get_json(srv: SearchServer, path: str, method: str = "GET") -> tuple[int, dict]:
    status, headers, body = get(srv, path, method)
    assert headers["Content-Type"].startswith("application/json")
    return status, json.loads(body)


def test_binds_to_localhost_by_default(server) -> None:
    srv, _, _ = server
    assert srv.server_address[0] == "127.0.0.1" and srv.url.startswith("http://127.0.0.1:")


def test_page_and_info(server) -> None:
    srv, _, _ = server
    status, headers, body = get(srv, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert 'id="q"' in page and 'id="results"' in page and "/api/search" in page
    status, info = get_json(srv, "/api/info")
    assert status == 200 and info["count"] == 15 and info["max_k"] == 8
    assert info["embed_dim"] == 6 and info["index"] == "flat"


def test_search_api_returns_ranked_results_with_image_urls(server) -> None:
    srv, gallery, root = server
    status, data = get_json(srv, "/api/search?q=" + quote(pair_query("red", "black")) + "&k=3")
    assert status == 200
    assert data["query"] == pair_query("red", "black") and data["k"] == 3
    res = data["results"]
    assert [r["rank"] for r in res] == [1, 2, 3]
    assert res[0]["path"] == gallery[("red", "black")].relative_to(root).as_posix()
    assert res[0]["score"] >= res[1]["score"] >= res[2]["score"]
    status, headers, body = get(srv, res[0]["url"])
    assert status == 200 and body == gallery[("red", "black")].read_bytes()
    assert headers["Content-Type"].startswith("image/")
    # Without k: 10, capped at max_k (8 here).
    status, data = get_json(srv, "/api/search?q=" + quote(pair_query("blue", "yellow")))
    assert status == 200 and data["k"] == 8 and len(data["results"]) == 8


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/api/search", 400, "missing query parameter q"),
        ("/api/search?q=", 400, "empty"),
        ("/api/search?q=%20%20&k=3", 400, "empty"),
        ("/api/search?q=" + "red%20" * 20, 400, "limit is 60"),
        ("/api/search?q=red&k=abc", 400, "k must be an integer"),
        ("/api/search?q=red&k=2.5", 400, "k must be an integer"),
        ("/api/search?q=red&k=0", 400, "between 1 and 8"),
        ("/api/search?q=red&k=9", 400, "between 1 and 8"),
        ("/api/search?q=red&k=99999999999999999999", 400, "k must be an integer"),
        ("/nope", 404, "unknown route"),
        ("/api/searchx?q=red", 404, "unknown route"),
    ],
)
def test_bad_requests_get_json_4xx(server, path: str, status: int, fragment: str) -> None:
    srv, _, _ = server
    got, data = get_json(srv, path)
    assert got == status and fragment in data["error"]


def test_other_methods_are_refused(server) -> None:
    srv, _, _ = server
    status, headers, body = get(srv, "/api/search?q=red", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert "use GET" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/image/../../etc/passwd",
        "/image/..%2F..%2Fetc%2Fpasswd",
        "/image/%2e%2e/%2e%2e/etc/passwd",
        "/image/-1",
        "/image/15",
        "/image/999999",
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


def test_all_indexed_images_are_reachable_by_position(server) -> None:
    srv, _, root = server
    rel = srv.searcher.relative_paths
    for i in (0, len(rel) - 1):
        status, _, body = get(srv, f"/image/{i}")
        assert status == 200 and body == (root / rel[i]).read_bytes()


def test_encoder_failure_is_a_500_and_the_server_keeps_serving(server) -> None:
    srv, _, _ = server

    def boom(texts, batch_size=256):
        raise RuntimeError("model exploded")

    good = srv.searcher.encoder.encode_text
    srv.searcher.encoder.encode_text = boom
    got, data = get_json(srv, "/api/search?q=red")
    assert got == 500 and "internal error" in data["error"]
    srv.searcher.encoder.encode_text = good
    got, _ = get_json(srv, "/api/search?q=red")
    assert got == 200
