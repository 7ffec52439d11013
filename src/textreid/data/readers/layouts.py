"""The authors' pre-processed layout and the per-image JSON lists (CUHK-PEDES raw, ICFG-PEDES, RSTPReid)."""

from __future__ import annotations

from pathlib import Path

from textreid.data.readers.entries import _BAD, _found, _get, _load_json, _Row, _word_table_rows
from textreid.data.readers.registry import SPLITS, WORD_TABLE_FILE, DatasetSpec
from textreid.data.records import Problem


def read_authors(folder: Path, split: str, problems: list[Problem], files: list[Path]) -> list[_Row]:
    file = folder / "annotations" / f"{split}.json"
    files.append(file)
    ok, data = _load_json(
        file, problems,
        f"the authors' layout expects {folder}/annotations/{{train,val,test}}.json and {folder}/imgs/",
    )
    if not ok:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        found = (f"an object with keys {', '.join(map(str, data))}" if isinstance(data, dict)
                 else _found(data))
        problems.append(Problem(str(file), None,
                                f'expected {{"annotations": [...]}} at the top level, found {found}'))
        return []
    table = folder / WORD_TABLE_FILE
    vocab_size = _word_table_rows(table, problems) if table.is_file() else None
    imgs = folder / "imgs"
    rows: list[_Row] = []
    for i, entry in enumerate(data["annotations"]):
        errors: list[str] = []
        if not isinstance(entry, dict):
            problems.append(Problem(str(file), i, f"entry should be an object, found {_found(entry)}"))
            continue
        image_id = _get(entry, "image_id", int, errors.append)
        person = _get(entry, "id", int, errors.append)
        rel = _get(entry, "file_path", str, errors.append)
        sentence = _get(entry, "sentence", str, errors.append)
        onehot = _get(entry, "onehot", list, errors.append)
        if rel is not _BAD and not rel.strip():
            errors.append("empty 'file_path'")
        if sentence is not _BAD and not sentence.strip():
            errors.append("empty caption ('sentence')")
        if onehot is not _BAD:
            errors += _onehot_errors(onehot, vocab_size, table)
        if errors:
            problems.extend(Problem(str(file), i, e) for e in errors)
            continue
        rows.append(_Row(i, imgs / rel, person, image_id, sentence, tuple(onehot)))
    return rows


def _onehot_errors(onehot: list, vocab_size: int | None, table: Path) -> list[str]:
    if not onehot:
        return ["empty 'onehot' list"]
    for pos, v in enumerate(onehot):
        if isinstance(v, bool) or not isinstance(v, int):
            return [f"'onehot' should be a list of int, found {_found(v)} at position {pos}"]
    low, high = min(onehot), max(onehot)
    if low < 0:
        return [f"'onehot' id {low} at position {onehot.index(low)} is negative"]
    if vocab_size is not None and high >= vocab_size:
        return [f"'onehot' id {high} at position {onehot.index(high)} is out of range of the word "
                f"table {table} ({vocab_size} rows)"]
    return []


def read_per_image(
    spec: DatasetSpec, folder: Path, split: str, problems: list[Problem], files: list[Path]
) -> list[_Row]:
    file = folder / spec.annotation_file
    files.append(file)
    ok, data = _load_json(
        file, problems,
        f"dataset {spec.name!r} expects {file} (a JSON list of per-image entries) and {folder}/imgs/",
    )
    if not ok:
        return []
    if not isinstance(data, list):
        hint = ("; this looks like the authors' layout (annotations/<split>.json)"
                if isinstance(data, dict) and "annotations" in data else "")
        problems.append(Problem(str(file), None,
                                f"expected a JSON list of per-image entries, found {_found(data)}{hint}"))
        return []
    imgs = folder / "imgs"
    rows: list[_Row] = []
    for i, entry in enumerate(data):
        errors: list[str] = []
        if not isinstance(entry, dict):
            problems.append(Problem(str(file), i, f"entry should be an object, found {_found(entry)}"))
            continue
        entry_split = _get(entry, "split", str, errors.append)
        if entry_split is not _BAD and entry_split not in SPLITS:
            errors.append(f"'split' should be one of {', '.join(SPLITS)}, found {entry_split!r}")
        if errors:
            problems.extend(Problem(str(file), i, e) for e in errors)
            continue
        if entry_split != split:
            continue
        person = _get(entry, "id", (int, str), errors.append)
        rel = _get(entry, spec.path_key, str, errors.append)
        captions = _get(entry, "captions", list, errors.append)
        if person is not _BAD and isinstance(person, str) and not person.strip():
            errors.append("empty 'id'")
        if rel is not _BAD and not rel.strip():
            errors.append(f"empty {spec.path_key!r}")
        if captions is not _BAD and not captions:
            errors.append("'captions' is an empty list")
        if errors:
            problems.extend(Problem(str(file), i, e) for e in errors)
            continue
        for j, caption in enumerate(captions):
            if not isinstance(caption, str):
                problems.append(Problem(str(file), i, f"caption {j} should be str, found {_found(caption)}"))
            elif not caption.strip():
                problems.append(Problem(str(file), i, f"caption {j} is empty"))
            else:
                rows.append(_Row(i, imgs / rel, person, None, caption))
    return rows

