"""``textreid data check``: read every split, open every image, report counts and problems."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from textreid.data.images import decode_image
from textreid.data.readers import DATASETS, Split, load_split, parse_dataset_name
from textreid.data.records import DataError, Problem, Record
from textreid.data.vocab import tokenize


@dataclass
class CheckRow:
    """Counts of one ``<dataset>_<split>`` (valid entries only)."""

    name: str
    ids: int = 0
    images: int = 0
    captions: int = 0
    truncated: int = 0  # captions longer than max_length words
    problems: int = 0


@dataclass
class CheckReport:
    """Result of ``check_datasets``: one row per split and every problem found."""

    rows: list[CheckRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    max_length: int = 100
    notes: list[str] = field(default_factory=list)  # findings that are not problems

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def table(self) -> str:
        """Aligned text table: dataset split | ids | images | captions | truncated | problems."""
        header = ["dataset split", "ids", "images", "captions", f"truncated (>{self.max_length} words)", "problems"]
        body = [[r.name, r.ids, r.images, r.captions, r.truncated, r.problems] for r in self.rows]
        cells = [header] + [[str(c) for c in row] for row in body]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = []
        for n, row in enumerate(cells):
            first = row[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join([first, *rest]))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        text = self.table()
        if self.problems:
            shown = "\n".join(f"  - {p}" for p in self.problems[:50])
            more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
            text += f"\n\n{len(self.problems)} problem(s):\n{shown}{more}"
        else:
            text += "\n\nno problems found"
        return text


def identity_minimums(train: Sequence[str], evaluated: Sequence[str], *, ids_per_batch: int) -> dict[str, tuple[int, str]]:
    """Fewest identities each split needs, with the reason: a training batch holds ``ids_per_batch``
    distinct persons (and the instance loss needs 2); ranking needs 2 (with one person every
    query's first match is right and Rank-1 = 100 means nothing)."""
    need = {name: (2, "ranking needs at least 2 persons (with one, every metric is a meaningless 100)")
            for name in evaluated}
    for name in train:
        need[name] = (max(2, ids_per_batch), f"a training batch needs {ids_per_batch} distinct persons "
                      f"(SOLVER.IMS_PER_BATCH / DATALOADER.IMS_PER_ID) and the identity loss at least 2")
    return need


def _word_count(record: Record) -> int:
    return len(record.word_ids) if record.word_ids is not None else len(tokenize(record.caption))


def _open(path: Path) -> str | None:
    """None if the image decodes fully, else the reason."""
    try:
        decode_image(path)  # verify() would skip most of a JPEG; decoding finds truncated files
        return None
    except Exception as exc:  # any decoder failure is a finding, not a crash
        return f"{type(exc).__name__}: {exc}"


def check_datasets(
    names: Sequence[str],
    *,
    root: str | Path = ".",
    dataset_dir: str | Path = "",
    annotations: str | Path = "",
    max_length: int = 100,
    open_images: bool = True,
    progress: bool = True,
    min_ids: Mapping[str, tuple[int, str]] | None = None,
    optional: Collection[str] = (),
) -> CheckReport:
    """Validate each ``<dataset>_<split>`` (files, entries, images) and count what is usable.

    An empty split is reported as a problem (e.g. ``icfgpedes_val``: ICFG-PEDES has no val), except
    the ``optional`` ones (a validation split chosen by "auto"), which get a note. ``min_ids`` maps
    a split to the fewest identities it needs and why (see :func:`identity_minimums`).
    """
    report = CheckReport(max_length=max_length)
    to_open: dict[Path, tuple[CheckRow, str, int]] = {}  # image -> (row, annotation file, entry)
    for name in names:
        row = CheckRow(name)
        report.rows.append(row)
        try:
            result = load_split(name, root=root, dataset_dir=dataset_dir, annotations=annotations)
        except DataError as exc:  # unknown name, missing DATASETS.ANNOTATIONS
            report.problems.append(Problem(name, None, str(exc)))
            row.problems = 1
            continue
        problems = _count_split(row, result, report, max_length=max_length, least=(min_ids or {}).get(name, (0, "")),
                                optional=name in optional)
        report.problems += problems
        if open_images:
            for r in result.records:
                to_open.setdefault(r.image_path, (row, str(result.files[0]), r.source_index))
    if to_open:
        _open_images(to_open, report, progress=progress)
    return report


def _count_split(row: CheckRow, result: Split, report: CheckReport, *, max_length: int, least: tuple[int, str],
                 optional: bool) -> list[Problem]:
    """Fill ``row`` with the split's counts; its problems (the reader's, emptiness, too few ids)."""
    name = row.name
    problems = list(result.problems)
    records = result.records
    if not records and not problems and optional:
        report.notes.append(f"{name} is empty: training runs without validation and keeps the last epoch")
    elif not records and not problems:
        dataset, split = parse_dataset_name(name)
        absent = split not in DATASETS[dataset].splits
        note = f" ({dataset} has no {split} split)" if absent else ""
        problems.append(Problem(str(result.files[0]), None, f"no captions for split {split!r}{note}"))
    row.ids = len({r.person_id for r in records})
    fewest, why = least
    if records and row.ids < fewest:
        problems.append(Problem(str(result.files[0]), None, f"{name} has {row.ids} person(s), too few: {why}"))
    row.images = len({r.image_id for r in records})
    row.captions = len(records)
    row.truncated = sum(_word_count(r) > max_length for r in records)
    row.problems = len(problems)
    return problems


def _open_images(to_open: Mapping[Path, tuple[CheckRow, str, int]], report: CheckReport, *, progress: bool) -> None:
    """Decode every image once (threads); each failure is a problem of the split that named it first."""
    paths = list(to_open)
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        results = tqdm(pool.map(_open, paths), total=len(paths), desc="opening images",
                       unit="img", disable=not progress)
        for path, error in zip(paths, results, strict=True):
            if error is not None:
                row, file, index = to_open[path]
                report.problems.append(Problem(file, index, f"image {path} cannot be read: {error}"))
                row.problems += 1
