"""The search page in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import shutil
import threading
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
def test_typing_a_description_shows_the_right_person_first(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    gallery = make_gallery(tmp_path / "g")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", progress=False)
    srv = make_server(Searcher(tmp_path / "idx", encoder=ColourEncoder()), port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.set_default_timeout(15_000)
                page.goto(srv.url + "/")
                page.fill("#q", pair_query("yellow", "black"))
                page.fill("#k", "5")
                page.click("#go")
                page.wait_for_selector("#results .card")
                cards = page.locator("#results .card")
                assert cards.count() == 5
                assert cards.first.locator(".name").inner_text() == gallery[
                    ("yellow", "black")
                ].name
                assert cards.first.get_attribute("data-rank") == "1"
                # The thumbnail really loaded from /image/<i>.
                page.wait_for_function(
                    "document.querySelector('#results .card img').naturalWidth > 0"
                )
                assert "5 results" in page.inner_text("#status")

                # Server-side validation reaches the user as a readable message.
                page.fill("#q", "   ")
                page.click("#go")
                page.wait_for_selector("#status.error")
                assert "empty" in page.inner_text("#status")
                assert page.locator("#results .card").count() == 0
            finally:
                browser.close()
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
