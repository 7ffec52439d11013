"""The rules every entry point applies to a query, and the JSON shape of a result.

Shared by :class:`~textreid.search.searcher.Searcher`, the web server, the CLI and
``textreid.api.Encoder``, so a query that one refuses the others refuse with the same words,
and a hit looks the same everywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from textreid.data.vocab import tokenize  # imported up front: the first query must not wait
from textreid.search.errors import QueryError, UnknownWordsError

MAX_QUERY_CHARS = 500  # default limit of the server and the CLI
_INT = re.compile(r"[+-]?\d{1,9}")


def check_query(
    text: Any, *, max_chars: int | None = None, position: int | None = None, noun: str = "query"
) -> str:
    """The query stripped of surrounding blanks, or an error saying what is wrong with it.

    ``TypeError`` for a non-string; :class:`QueryError` for a query with no visible character
    (spaces, control characters or nothing) or one longer than ``max_chars``. ``position``
    (1-based) names the query among several in messages, as ``noun``.
    """
    which = f"the {noun}" if position is None else f"{noun} {position}"
    if not isinstance(text, str):
        raise TypeError(f"{which} must be a string, got {type(text).__name__} ({text!r:.40})")
    if not any(c.isprintable() and not c.isspace() for c in text):
        raise QueryError(f"{which} is empty: describe the person to search for")
    text = text.strip()
    if max_chars is not None and len(text) > max_chars:
        raise QueryError(f"{which} is {len(text)} characters long; the limit is {max_chars}")
    return text


def check_queries(texts: Any, *, max_chars: int | None = None) -> list[str]:
    """:func:`check_query` on each of a list of queries (a bare string is one query)."""
    queries = [texts] if isinstance(texts, str) else list(texts)
    if not queries:
        raise QueryError("no queries given")
    single = len(queries) == 1
    return [
        check_query(t, max_chars=max_chars, position=None if single else i + 1)
        for i, t in enumerate(queries)
    ]


def check_k(k: Any, limit: int) -> int:
    """``k`` as an int in ``1..limit``: ``TypeError`` for a non-integer, :class:`QueryError`
    when out of range."""
    if isinstance(k, bool) or not hasattr(k, "__index__"):
        raise TypeError(f"k must be an integer, got {k!r}")
    k = int(k)
    if not 1 <= k <= limit:
        raise QueryError(f"k must be between 1 and {limit}, got {k}")
    return k


def parse_k(raw: str, limit: int) -> int:
    """``k`` from text (a URL parameter): a decimal integer in ``1..limit``."""
    if not _INT.fullmatch(raw.strip()):
        raise QueryError(f"k must be an integer 1..{limit}, got {raw!r}")
    return check_k(int(raw), limit)


def parse_position(raw: str, count: int) -> int:
    """An image position ``0..count-1`` from text (a URL parameter)."""
    if not _INT.fullmatch(raw.strip()) or not 0 <= int(raw) < count:
        raise QueryError(f"no image {raw.strip()[:20]!r}: the index holds images 0..{count - 1}")
    return int(raw)


def unknown_words(vocab: Any, text: str) -> tuple[list[str], int]:
    """(words of ``text`` missing from a word vocabulary, number of words), in order, unique."""
    words = tokenize(text)
    missing = list(dict.fromkeys(w for w in words if w not in vocab))
    return missing, len(words)


def ignored_words(encoder: Any, text: str) -> list[str]:
    """Words of ``text`` that ``encoder`` cannot read (ignored when embedding).

    Raises :class:`UnknownWordsError` when no word of ``text`` is known. Encoders without an
    ``ignored_words`` method, or without a word vocabulary (CLIP's byte-pair tokenizer reads
    any string), ignore nothing.
    """
    check = getattr(encoder, "ignored_words", None)
    return list(check(text)) if check is not None else []


def vocabulary_check(vocab: Any, text: str) -> list[str]:
    """Unknown words of ``text`` for a word vocabulary; :class:`UnknownWordsError` if all are."""
    missing, count = unknown_words(vocab, text)
    if len(missing) == count:
        raise UnknownWordsError(text, missing)
    return missing


def hit_json(hit: Any, root: str | None = None, url: str | None = None) -> dict[str, Any]:
    """One result as JSON: ``{"rank", "score", "index", "path"[, "url"]}``.

    ``path`` is relative to ``root`` (POSIX separators) when given, else absolute; ``index`` is
    the image's position in the index (what ``/image/<i>`` and ``/api/similar?i=`` take).
    """
    path = Path(os.path.relpath(hit.path, root)).as_posix() if root else hit.path
    row: dict[str, Any] = {
        "rank": hit.rank,
        "score": round(float(hit.score), 6),
        "index": int(hit.index),
        "path": path,
    }
    if url is not None:
        row["url"] = url
    return row
