"""The unit every reader produces: one ``Record`` per caption, plus the problem/error types."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Record:
    """One caption of one image of one person."""

    image_path: Path  # absolute path of the image file
    person_id: int  # contiguous label 0..N-1 of the split (train) or the dataset's own id
    image_id: int  # shared by every caption of the same image within a split
    caption: str  # the raw caption text
    split: str  # "train" | "val" | "test"
    word_ids: tuple[int, ...] | None = None  # authors' layout: ``onehot`` ids into their word table
    source_index: int = -1  # index of the entry in the source file (for messages)


@dataclass(frozen=True, slots=True)
class Problem:
    """One defect found in a dataset file; ``index`` is the entry index (None = the whole file)."""

    file: str
    index: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.index is None else f"{self.file}: entry {self.index}"
        return f"{where}: {self.message}"


class DataError(ValueError):
    """A dataset that cannot be read as asked; the message lists the problems (file + entry)."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems or [])

    @classmethod
    def from_problems(cls, what: str, problems: list[Problem], limit: int = 20) -> DataError:
        """An error whose message lists the first ``limit`` problems and how many more there are."""
        lines = [f"{len(problems)} problem(s) in {what}:"]
        lines += [f"  - {p}" for p in problems[:limit]]
        if len(problems) > limit:
            lines.append(f"  ... and {len(problems) - limit} more")
        return cls("\n".join(lines), problems)
