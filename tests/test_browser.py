"""The search page in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from search_fakes import ColourEncoder, make_gallery, pair_query
from textreid.search.index import build_index
from textreid.search.searcher import Searcher
from textreid.search.server import make_server

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_search_more_like_this_and_the_larger_view(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    gallery = make_gallery(tmp_path / "g")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", progress=False)
    srv = make_server(Searcher(tmp_path / "idx", encoder=ColourEncoder()), port=0).start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                _drive(browser.new_page(), srv.url, gallery, tmp_path / "g")
            finally:
                browser.close()
    finally:
        srv.shutdown()


def _until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting in the browser"
        time.sleep(0.05)


def _drive(page, url: str, gallery: dict, root: Path) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []  # script errors and CSP violations (HTTP 4xx answers are expected)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.set_default_timeout(15_000)
    page.goto(url + "/")
    status = page.locator("#status")
    expect(status).to_contain_text("indexed")
    page.fill("#q", pair_query("yellow", "black") + " blorp")
    page.fill("#k", "5")
    page.click("#go")
    page.wait_for_selector("#results .card")
    cards = page.locator("#results .card")
    assert cards.count() == 5
    assert cards.first.locator(".name").inner_text() == gallery[("yellow", "black")].name
    assert cards.first.get_attribute("data-rank") == "1"
    # The thumbnail really loaded from /image/<i> (under the page's Content-Security-Policy,
    # which also forbids eval: so no page.wait_for_function here).
    _until(lambda: cards.first.locator("img").evaluate("img => img.naturalWidth") > 0)
    assert "5 results" in page.inner_text("#status")
    assert "blorp" in page.inner_text("#notice")  # the ignored word is said

    # The larger view shows the image and its path.
    cards.first.locator("img").click()
    page.wait_for_selector("#viewer[open]")
    _until(lambda: page.locator("#viewer-img").evaluate("img => img.naturalWidth") > 0)
    rel = gallery[("yellow", "black")].relative_to(root).as_posix()
    assert rel in page.inner_text("#viewer-path")

    # More like this person, from the viewer: the person is left out, the rest ranked.
    first_index = cards.first.get_attribute("data-index")
    page.click("#viewer-like")
    expect(status).to_contain_text("images like")
    assert not page.locator("#viewer").evaluate("v => v.open")
    assert rel in page.inner_text("#status")
    indexes = page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.index)")
    assert len(indexes) == 5 and first_index not in indexes

    # ... and from a result's own button.
    second = page.locator("#results .card").nth(1)
    second_name = second.locator(".name").inner_text()
    second.locator("button.like").click()
    expect(status).to_contain_text(second_name)
    assert page.locator("#results .card").count() == 5

    # Server-side validation reaches the user as a readable message.
    for query, said in (("   ", "empty"), ("zzzz qqqq", "'zzzz', 'qqqq'")):
        page.fill("#q", query)
        page.click("#go")
        page.wait_for_selector("#status.error")
        assert said in page.inner_text("#status")
        assert page.locator("#results .card").count() == 0
    assert errors == []
