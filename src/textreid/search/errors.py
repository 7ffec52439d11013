"""Errors of the search tools that a user can act on (all ``ValueError`` subclasses).

Kept free of heavy imports so ``textreid.api`` and the CLI can use them cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence


class SearchError(ValueError):
    """Base class: a refused index, output folder, query or request parameter."""


class UnsafeOutputError(SearchError):
    """``--out`` would overwrite something that is not a textreid index (or the images)."""


class IndexFormatError(SearchError):
    """An index directory that is damaged, inconsistent, of another version, or that cannot be
    merged with the others."""


class HostileIndexError(SearchError):
    """An index entry points outside the index's recorded root or is not an image."""


class QueryError(SearchError):
    """A text query or parameter that cannot be searched (empty, too long, bad k)."""


class UnknownWordsError(QueryError):
    """Every word of a query is unknown to the model's vocabulary, so it would embed as blank.

    ``words`` holds the unknown words, ``text`` the query.
    """

    def __init__(self, text: str, words: Sequence[str]) -> None:
        self.text = text
        self.words = list(words)
        shown = ", ".join(repr(w) for w in self.words[:10])
        more = f" and {len(self.words) - 10} more" if len(self.words) > 10 else ""
        why = (
            f"{shown}{more} {'is' if len(self.words) == 1 else 'are'} not in the model's vocabulary"
            if self.words
            else "it holds no words at all"
        )
        super().__init__(
            f"no word of {text[:80]!r} is known to the model ({why}); describe the person with "
            "other words (e.g. colours and items of clothing)"
        )
