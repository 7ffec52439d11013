"""Standalone HTML pages of search results (thumbnails embedded, so the file is portable)."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from textreid.data.images import DECODE_ERRORS, decode_image
from textreid.fileio import atomic_write_text
from textreid.search.searcher import Hit

THUMB_HEIGHT = 128  # pedestrian crops are ~3:1, so thumbnails are ~43x128

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.3rem; }
section { margin-bottom: 1.8rem; }
h2 { font-size: 1rem; font-weight: 600; margin: 0 0 .3rem; }
.summary { color: #555; font-size: .85rem; margin: 0 0 .5rem; }
.grid { display: flex; flex-wrap: wrap; gap: .5rem; }
figure { margin: 0; padding: 3px; border: 3px solid #ccc; border-radius: 4px;
         width: 96px; text-align: center; font-size: .7rem; }
figure.correct { border-color: #1a9641; }
figure.incorrect { border-color: #d7191c; }
figure img { height: 128px; max-width: 90px; object-fit: contain; background: #eee; }
figcaption { overflow-wrap: anywhere; }
.mark { font-weight: 700; }
.correct .mark { color: #1a9641; }
.incorrect .mark { color: #d7191c; }
.missing { height: 128px; display: flex; align-items: center; justify-content: center;
           background: #eee; color: #900; }
"""


def thumbnail_data_uri(path: str | Path, height: int = THUMB_HEIGHT) -> str | None:
    """A JPEG data URI of the image downscaled to ``height`` pixels, or None if unreadable."""
    try:
        im = decode_image(path)
        w = max(1, round(im.width * height / im.height))
        if im.height > height:
            im = im.resize((w, height), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    except DECODE_ERRORS:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _norm(p: str | Path) -> str:
    return os.path.normcase(os.path.abspath(p))


def _figure(h: Hit, thumbs: dict[str, str | None], truth: set[str] | None) -> str:
    """One hit: thumbnail (cached per path in ``thumbs``), rank, score, name; marked against
    ``truth`` when given."""
    if h.path not in thumbs:
        thumbs[h.path] = thumbnail_data_uri(h.path)
    uri = thumbs[h.path]
    name = html.escape(os.path.basename(h.path))
    cls, mark = "", ""
    if truth is not None:
        ok = _norm(h.path) in truth
        cls = " correct" if ok else " incorrect"
        mark = (
            '<span class="mark" title="correct">&#10003;</span> '
            if ok
            else '<span class="mark" title="incorrect">&#10007;</span> '
        )
    img = f'<img src="{uri}" alt="{name}">' if uri else '<div class="missing">unreadable</div>'
    return (
        f'<figure class="hit{cls}" title="{html.escape(h.path)}">{img}'
        f"<figcaption>{mark}#{h.rank} &middot; {h.score:.3f}<br>"
        f'<span class="name">{name}</span></figcaption></figure>'
    )


def render_results(
    queries: Sequence[str],
    results: Sequence[Sequence[Hit]],
    out_html: str | Path,
    *,
    ground_truth: Sequence[set[str]] | None = None,
    title: str = "textreid search results",
) -> Path:
    """Write one self-contained HTML page: per query, its top-k thumbnails with scores.

    ``ground_truth[i]`` holds the correct image paths of query i (absolute, or relative to
    the current directory); correct results get a green border and a check mark, others red.
    """
    if len(queries) != len(results):
        raise ValueError(f"{len(queries)} queries but {len(results)} result lists")
    if ground_truth is not None and len(ground_truth) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(ground_truth)} ground-truth sets")
    out_html = Path(out_html)
    thumbs: dict[str, str | None] = {}
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for qi, (query, hits) in enumerate(zip(queries, results, strict=True)):
        truth = {_norm(p) for p in ground_truth[qi]} if ground_truth is not None else None
        parts.append(f'<section class="query" data-query-index="{qi}">')
        parts.append(f"<h2>{qi + 1}. {html.escape(query)}</h2>")
        if truth is not None:
            ranks = [h.rank for h in hits if _norm(h.path) in truth]
            first = f"first correct at rank {ranks[0]}" if ranks else "no correct image shown"
            parts.append(
                f'<p class="summary">{len(ranks)} of {len(hits)} correct; {first}; '
                f"{len(truth)} correct image(s) in the gallery</p>"
            )
        parts.append('<div class="grid">')
        parts.extend(_figure(h, thumbs, truth) for h in hits)
        parts.append("</div></section>")
    parts.append("</body></html>")
    return atomic_write_text(out_html, "\n".join(parts))
