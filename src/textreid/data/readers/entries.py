"""Checks shared by the layouts: typed fields, JSON files, and the cross-entry checks (``finish``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textreid.data.records import Problem, Record

_BAD = object()  # marks a value that failed validation


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {int: "int", str: "str", list: "list", dict: "object", float: "float"}
    if isinstance(types, tuple):
        return " or ".join(names.get(t, t.__name__) for t in types)
    return names.get(types, types.__name__)


def _found(value: Any) -> str:
    if value is None:
        return "null"
    kind = {dict: "object", list: "list", str: "str", bool: "bool", int: "int", float: "float"}
    return f"{kind.get(type(value), type(value).__name__)} {_short(value)}"


def _get(entry: dict, key: str, types: type | tuple[type, ...], report: Callable[[str], None]) -> Any:
    """``entry[key]`` if present with the right type (bool is not an int), else report and _BAD."""
    if key not in entry:
        present = ", ".join(map(str, entry)) or "none"
        report(f"missing key {key!r} (keys present: {present})")
        return _BAD
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, types):
        report(f"key {key!r} should be {_type_name(types)}, found {_found(value)}")
        return _BAD
    return value


def _load_json(path: Path, problems: list[Problem], hint: str = "") -> tuple[bool, Any]:
    """(True, data) or (False, None) after recording why the file cannot be used."""
    if not path.is_file():
        problems.append(Problem(str(path), None, "file not found" + (f" ({hint})" if hint else "")))
        return False, None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(str(path), None, f"not UTF-8 text (bad byte at offset {exc.start})"))
        return False, None
    except OSError as exc:
        problems.append(Problem(str(path), None, f"cannot be read: {exc}"))
        return False, None
    try:
        return True, json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(
            Problem(str(path), None, f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                    f"{exc.msg} (truncated or partly downloaded file?)")
        )
        return False, None


def _word_table_rows(path: Path, problems: list[Problem]) -> int | None:
    """Number of rows of a .npy word table, read from its header only."""
    try:
        shape = np.load(path, mmap_mode="r").shape
    except Exception as exc:  # numpy raises EOFError, ValueError, OSError, UnpicklingError...
        problems.append(Problem(str(path), None, f"cannot read the word table: {exc}"))
        return None
    if len(shape) != 2:
        problems.append(Problem(str(path), None, f"word table should be 2-D [V, D], found shape {shape}"))
        return None
    return int(shape[0])


def _id_sort_key(value: int | str) -> tuple[int, int, str]:
    """Integers and digit strings in numeric order, then other strings alphabetically."""
    if isinstance(value, int):
        return (0, value, "")
    text = value.strip()
    if text.lstrip("-").isdigit():
        return (0, int(text), value)
    return (1, 0, value)


@dataclass(slots=True)
class _Row:
    """One caption before validation across entries (image ids, existence, id remapping)."""

    index: int  # entry index in the source file
    path: Path  # absolute image path
    person: int | str  # person id as in the file
    image_key: int | None  # authors' image_id; None = assign per path
    caption: str
    word_ids: tuple[int, ...] | None = None


def finish(
    rows: list[_Row], *, file: Path, split: str, remap: str, imgs_dir: Path | None, problems: list[Problem]
) -> tuple[list[Record], dict[int, int | str]]:
    """Cross-entry checks, image ids, person-id remapping → records of the entries without problems.

    ``remap``: "always" (per split), "if_needed" (only when ids are not 0..N-1) or "never".
    """
    bad: set[int] = set()  # positions in ``rows``
    if imgs_dir is not None and rows and not imgs_dir.is_dir():
        problems.append(Problem(str(imgs_dir), None, f"image folder not found ({len(rows)} captions refer to it)"))
        return [], {}

    # one image = one person and one path: conflicting duplicates are reported at the later entry
    first: dict[Any, tuple[int | str, Path, int]] = {}
    for pos, row in enumerate(rows):
        key = row.image_key if row.image_key is not None else row.path
        seen = first.setdefault(key, (row.person, row.path, row.index))
        what = f"image_id {key}" if row.image_key is not None else f"image {row.path}"
        if seen[0] != row.person:
            problems.append(Problem(str(file), row.index, f"{what} has person id {_short(row.person)} here "
                                    f"but {_short(seen[0])} at entry {seen[2]}"))
            bad.add(pos)
        elif seen[1] != row.path:
            problems.append(Problem(str(file), row.index, f"image_id {key} has file path {str(row.path)!r} "
                                    f"here but {str(seen[1])!r} at entry {seen[2]}"))
            bad.add(pos)

    exists: dict[Path, bool] = {}
    for pos, row in enumerate(rows):
        if row.path not in exists:
            exists[row.path] = os.path.isfile(row.path)
            if not exists[row.path]:
                problems.append(Problem(str(file), row.index, f"image file not found: {row.path}"))
        if not exists[row.path]:
            bad.add(pos)

    kept = [row for pos, row in enumerate(rows) if pos not in bad]
    originals = sorted({row.person for row in kept}, key=_id_sort_key)
    if remap == "never" or (remap == "if_needed" and originals == list(range(len(originals)))):
        label = {p: p for p in originals}
    else:
        label = {p: i for i, p in enumerate(originals)}
    image_ids: dict[Path, int] = {}
    records = []
    for row in kept:
        image_id = row.image_key if row.image_key is not None else image_ids.setdefault(row.path, len(image_ids))
        records.append(Record(row.path, int(label[row.person]), image_id, row.caption, split,
                              row.word_ids, row.index))
    return records, {int(v): k for k, v in label.items()}

