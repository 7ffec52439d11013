"""Records → DataLoaders whose batches are dicts of tensors.

Training batch (``collate``)::

    {"images": [B, 3, H, W] float, "person_ids": [B] long, "image_ids": [B] long,
     "indices": [B] long (positions in ``records``),
     + the tokenizer's keys: "word_ids" [B, L] and "lengths" [B]  (WordTokenizer)
                           or "tokens" [B, 77]                    (ClipTokenizer)}

Evaluation (``build_eval_loaders``) follows IRRA: a gallery loader over unique images
(``{"images", "indices"}``) and a query loader over every caption (``{"person_ids", "indices"}``
+ tokenizer keys); ``indices`` point into the returned ``gallery`` / ``queries`` lists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from textreid.data.images import DECODE_ERRORS, decode_image
from textreid.data.records import DataError, Record
from textreid.data.sampler import IdentitySampler
from textreid.data.text import ClipTokenizer, WordTokenizer

Tokenizer = WordTokenizer | ClipTokenizer
Transform = Callable[[Image.Image], torch.Tensor]


def load_image(path: str | Path, *, context: str = "") -> Image.Image:
    """Open an image as RGB; failures raise DataError naming the path (and ``context``)."""
    try:
        return decode_image(path)
    except DECODE_ERRORS as exc:
        where = f" ({context})" if context else ""
        raise DataError(f"cannot read image {path}{where}: {exc}") from exc


class CaptionDataset(Dataset):
    """One item per caption record: the transformed image plus the caption's labels."""

    def __init__(self, records: Sequence[Record], transform: Transform) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        seed = None
        if isinstance(index, tuple):  # (index, augmentation seed) from IdentitySampler(with_seeds=True)
            index, seed = index
        r = self.records[index]
        image = load_image(r.image_path, context=f"record {index}, source entry {r.source_index}")
        if seed is None:
            tensor = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG untouched
                torch.manual_seed(seed)
                tensor = self.transform(image)
        return {
            "image": tensor,  # [3, H, W]
            "person_id": r.person_id,
            "image_id": r.image_id,
            "caption": r.caption,
            "word_ids": list(r.word_ids) if r.word_ids is not None else None,
            "index": index,
        }


class ImageDataset(Dataset):
    """Images only (the gallery): ``{"image": [3, H, W], "index": int}``."""

    def __init__(self, paths: Sequence[str | Path], transform: Transform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.transform(load_image(self.paths[index], context=f"gallery item {index}")),
                "index": index}


class TextDataset(Dataset):
    """Captions only (the queries): ``{"caption", "word_ids", "person_id", "index"}``."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        return {"caption": r.caption, "person_id": r.person_id, "index": index,
                "word_ids": list(r.word_ids) if r.word_ids is not None else None}


def tokenize_items(items: Sequence[dict[str, Any]], tokenizer: Tokenizer, shipped_ids: bool = False) -> dict:
    """The tokenizer's tensors for a list of items.

    The shipped ids (the authors' ``onehot``) are used when ``shipped_ids`` (the model was trained on
    them: ``Preprocess.shipped_ids``), every item has them and the tokenizer is a WordTokenizer;
    otherwise the captions are tokenised, whatever ids the records carry.
    """
    if (shipped_ids and isinstance(tokenizer, WordTokenizer)
            and all(it.get("word_ids") is not None for it in items)):
        return tokenizer.from_ids([it["word_ids"] for it in items])
    return tokenizer([it["caption"] for it in items])


def collate(items: Sequence[dict[str, Any]], tokenizer: Tokenizer, shipped_ids: bool = False) -> dict:
    """CaptionDataset items → the training batch dict (see the module docstring)."""
    batch = {
        "images": torch.stack([it["image"] for it in items]),  # [B, 3, H, W]
        "person_ids": torch.tensor([it["person_id"] for it in items], dtype=torch.long),  # [B]
        "image_ids": torch.tensor([it["image_id"] for it in items], dtype=torch.long),  # [B]
        "indices": torch.tensor([it["index"] for it in items], dtype=torch.long),  # [B]
    }
    batch.update(tokenize_items(items, tokenizer, shipped_ids))
    return batch


def collate_images(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """ImageDataset items → ``{"images": [B, 3, H, W], "indices": [B]}``."""
    return {"images": torch.stack([it["image"] for it in items]),
            "indices": torch.tensor([it["index"] for it in items], dtype=torch.long)}


def collate_texts(items: Sequence[dict[str, Any]], tokenizer: Tokenizer, shipped_ids: bool = False) -> dict:
    """TextDataset items → ``{"person_ids": [B], "indices": [B]}`` + the tokenizer's keys."""
    batch = {"person_ids": torch.tensor([it["person_id"] for it in items], dtype=torch.long),
             "indices": torch.tensor([it["index"] for it in items], dtype=torch.long)}
    batch.update(tokenize_items(items, tokenizer, shipped_ids))
    return batch


class GalleryImage(NamedTuple):
    """One gallery entry: a unique image of the split."""

    image_id: int
    image_path: Path
    person_id: int


def gallery_and_queries(records: Sequence[Record]) -> tuple[list[GalleryImage], list[Record]]:
    """Unique images (first-seen order of ``image_id``) and every caption as a query."""
    seen: dict[int, GalleryImage] = {}
    for r in records:
        if r.image_id not in seen:
            seen[r.image_id] = GalleryImage(r.image_id, r.image_path, r.person_id)
    return list(seen.values()), list(records)


class TrainLoader(DataLoader):
    """A DataLoader over an IdentitySampler that tells it which batches reached the caller.

    Workers prefetch index lists, so the sampler alone would count batches that were never
    trained on; this keeps ``loader.batch_sampler.state_dict()`` exact for mid-epoch resume.
    """

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        sampler: IdentitySampler = self.batch_sampler
        delivered = sampler.resume_offset
        sampler.mark_delivered(delivered)
        for batch in super().__iter__():
            delivered += 1
            sampler.mark_delivered(delivered)
            yield batch


def _worker_init(worker_id: int) -> None:
    """One intra-op thread per loader worker: the main process already uses every core, and
    oversubscribed OpenMP pools made a 2-core CPU run up to 10x slower."""
    torch.set_num_threads(1)


def build_train_loader(
    records: Sequence[Record],
    *,
    transform: Transform,
    tokenizer: Tokenizer,
    batch_size: int,
    ims_per_id: int,
    seed: int,
    num_workers: int,
    pin_memory: bool,
    rank: int | None = None,
    world_size: int | None = None,
    shipped_ids: bool = False,
    grouping: str = "balanced",
) -> TrainLoader:
    """Training loader: an IdentitySampler over ``records`` (``batch_size`` is the global batch).

    Each process gets ``batch_size / world_size`` items per step; ``loader.batch_sampler`` is
    the sampler (``set_epoch``, ``state_dict``, ``load_state_dict``), whose consumed count is
    the number of batches this loader delivered. Worker seeds derive from ``seed`` and the rank.
    """
    sampler = IdentitySampler([r.person_id for r in records], batch_size=batch_size,
                              ims_per_id=ims_per_id, seed=seed, rank=rank, world_size=world_size,
                              with_seeds=True, grouping=grouping)
    generator = torch.Generator().manual_seed(seed * 1000 + sampler.rank)
    return TrainLoader(
        CaptionDataset(records, transform),
        batch_sampler=sampler,
        collate_fn=functools.partial(collate, tokenizer=tokenizer, shipped_ids=shipped_ids),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init,
        generator=generator,
    )


class EvalLoaders(NamedTuple):
    """Loaders and the lists their ``indices`` refer to."""

    image_loader: DataLoader  # batches {"images", "indices"} over ``gallery``
    text_loader: DataLoader  # batches {"person_ids", "indices", + tokenizer keys} over ``queries``
    gallery: list[GalleryImage]  # one per unique image_id
    queries: list[Record]  # one per caption


def _shard(items: list, rank: int, world_size: int) -> list:
    """Contiguous slice ``rank`` of ``world_size``; concatenating the slices restores the list."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    n = len(items)
    return items[rank * n // world_size : (rank + 1) * n // world_size]


def build_eval_loaders(
    records: Sequence[Record],
    *,
    transform: Transform,
    tokenizer: Tokenizer,
    batch_size: int,
    num_workers: int,
    shipped_ids: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> EvalLoaders:
    """Gallery and query loaders in fixed order (no shuffling).

    With ``world_size > 1`` each process loads a contiguous slice of the gallery and of the
    queries; ``indices`` stay global, and ``dist.all_gather_variable`` of per-rank features
    (rank order) restores the full lists. ``gallery``/``queries`` are always the full lists.
    """
    gallery, queries = gallery_and_queries(records)
    gallery_part = _shard(list(range(len(gallery))), rank, world_size)
    query_part = _shard(list(range(len(queries))), rank, world_size)
    images = Subset(ImageDataset([g.image_path for g in gallery], transform), gallery_part)
    texts = Subset(TextDataset(queries), query_part)
    common = {"batch_size": batch_size, "shuffle": False, "drop_last": False, "num_workers": num_workers,
              "worker_init_fn": _worker_init, "generator": torch.Generator()}  # own generator: keeps the
    # training RNG untouched by evaluation
    image_loader = DataLoader(images, collate_fn=collate_images, **common)
    text_loader = DataLoader(
        texts, collate_fn=functools.partial(collate_texts, tokenizer=tokenizer, shipped_ids=shipped_ids),
        **common)
    return EvalLoaders(image_loader, text_loader, gallery, queries)
