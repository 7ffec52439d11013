"""The custom layout: the user's JSON Lines, CSV or JSON list of (image, person_id, caption[, split])."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from textreid.data.readers.entries import _BAD, _found, _get, _load_json, _Row, _short
from textreid.data.readers.registry import SPLITS
from textreid.data.records import Problem


def _custom_entries(file: Path, problems: list[Problem]) -> list[tuple[str, Any, str]]:
    """(location, entry, parse error or "") of a JSONL/CSV/JSON file; location = "line N"."""
    suffix = file.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv", ".json"):
        problems.append(Problem(str(file), None,
                                f"unsupported annotation file type {suffix!r}: use .jsonl, .csv or .json"))
        return []
    if suffix == ".json":
        ok, data = _load_json(file, problems)
        if not ok:
            return []
        if not isinstance(data, list):
            problems.append(Problem(str(file), None, f"expected a JSON list of objects, found {_found(data)}"))
            return []
        return [("", e, "") for e in data]
    if not file.is_file():
        problems.append(Problem(str(file), None, "file not found (set DATASETS.ANNOTATIONS)"))
        return []
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(file), None, f"cannot be read as UTF-8 text: {exc}"))
        return []
    lines = text.replace("\r\n", "\n").split("\n")  # only real line ends (a caption may hold U+2028)
    if suffix == ".csv":
        return _csv_entries(file, lines, problems)
    entries: list[tuple[str, Any, str]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append((f"line {lineno}", json.loads(line), ""))
        except json.JSONDecodeError as exc:
            entries.append((f"line {lineno}", None, f"not valid JSON at column {exc.colno}: {exc.msg}"))
    return entries


def _csv_line(line: str) -> tuple[list[str], str]:
    """The fields of one CSV line, or the reason it cannot be parsed."""
    try:
        return next(csv.reader([line], strict=True)), ""
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return [], "unterminated quote: a quoted field must end on its line (add the closing \")"
        return [], f"not valid CSV: {exc}"


def _csv_entries(file: Path, lines: list[str], problems: list[Problem]) -> list[tuple[str, Any, str]]:
    """One entry per non-blank line after the header, so a broken quote cannot swallow the rows after it."""
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    columns, error = _csv_line(numbered[0][1]) if numbered else ([], "")
    if error:
        problems.append(Problem(str(file), None, f"line {numbered[0][0]} (the header): {error}"))
        return []
    missing = [c for c in ("image", "person_id", "caption") if c not in columns]
    if missing:
        problems.append(Problem(str(file), None, f"missing column(s) {', '.join(missing)} in the header "
                                f"(found: {', '.join(columns) or 'no header'})"))
        return []
    entries: list[tuple[str, Any, str]] = []
    for lineno, line in numbered[1:]:
        fields, error = _csv_line(line)
        if not error and len(fields) > len(columns):
            error = f"more fields than header columns ({len(fields)} > {len(columns)})"
        entries.append((f"line {lineno}", None if error else dict(zip(columns, fields, strict=False)), error))
    return entries


def read_custom(file: Path, split: str, problems: list[Problem], files: list[Path]) -> list[_Row]:
    files.append(file)
    rows: list[_Row] = []
    for i, (where, entry, parse_error) in enumerate(_custom_entries(file, problems)):
        prefix = f"{where}: " if where else ""
        errors: list[str] = []
        if parse_error:
            problems.append(Problem(str(file), i, prefix + parse_error))
            continue
        if not isinstance(entry, dict):
            problems.append(Problem(str(file), i, f"{prefix}entry should be an object, found {_found(entry)}"))
            continue
        image = _get(entry, "image", str, errors.append)
        person = _get(entry, "person_id", (int, str), errors.append)
        caption = _get(entry, "caption", str, errors.append)
        entry_split = entry.get("split") or "train"
        if not isinstance(entry_split, str) or entry_split not in SPLITS:
            errors.append(f"'split' should be one of {', '.join(SPLITS)}, found {_short(entry_split)}")
        if image is not _BAD and not image.strip():
            errors.append("empty 'image'")
        if person is not _BAD and isinstance(person, str) and not person.strip():
            errors.append("empty 'person_id'")
        if caption is not _BAD and not caption.strip():
            errors.append("empty caption")
        if errors:
            problems.extend(Problem(str(file), i, prefix + e) for e in errors)
            continue
        if entry_split != split:
            continue
        path = Path(image).expanduser()
        path = path if path.is_absolute() else file.parent / path
        # ids 7 and "7" name the same person (CSV only has strings)
        rows.append(_Row(i, path.absolute(), str(person), None, caption))
    return rows

