"""Transforms, datasets, collate and loaders: shapes, determinism and the documented batch dicts."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import write_authors_layout
from textreid.data.loaders import (
    CaptionDataset,
    build_eval_loaders,
    build_train_loader,
    collate,
    gallery_and_queries,
)
from textreid.data.readers import read_split
from textreid.data.records import DataError, Record
from textreid.data.text import ClipTokenizer, WordTokenizer
from textreid.data.transforms import build_transforms
from textreid.data.vocab import Vocabulary

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
H, W = 24, 12


def _image(colour: tuple[int, int, int] = (200, 30, 90), size: tuple[int, int] = (10, 30)) -> Image.Image:
    img = Image.new("RGB", size, colour)
    img.putpixel((0, 0), (0, 0, 0))  # not uniform, so flips/crops change pixels
    return img


def test_test_transform_is_deterministic_and_normalises() -> None:
    tf = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=False)
    img = Image.new("RGB", (10, 30), (128, 102, 77))  # ~ the mean colour
    out = tf(img)
    assert out.shape == (3, H, W) and out.dtype == torch.float32
    expected = torch.tensor([(v / 255 - m) / s for v, m, s in zip((128, 102, 77), MEAN, STD, strict=True)])
    assert torch.allclose(out, expected[:, None, None].expand(3, H, W), atol=1e-5)
    assert torch.equal(tf(_image()), tf(_image()))
    no_aug = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=True, use_aug=False)
    assert torch.equal(no_aug(_image()), tf(_image()))


def test_train_transform_shapes_randomness_and_erasing_with_mean() -> None:
    tf = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=True, padding=2)
    torch.manual_seed(0)
    outs = [tf(_image()) for _ in range(40)]
    assert all(o.shape == (3, H, W) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    # the source has no pixel equal to the mean and padding is black, so exact zeros in all
    # channels can only come from random erasing filling with the (normalised) mean
    erased = [(o == 0).all(dim=0).sum().item() for o in outs]
    assert max(erased) >= 0.02 * H * W
    with pytest.raises(ValueError, match="3 values"):
        build_transforms(height=H, width=W, mean=(0.5,), std=STD, train=True)


def _records(root: Path, split: str = "train") -> list[Record]:
    return read_split(f"cuhkpedes_{split}", root=root)


def test_caption_dataset_items_and_unreadable_image(authors_root: Path) -> None:
    records = _records(authors_root)
    tf = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=False)
    ds = CaptionDataset(records, tf)
    item = ds[3]
    assert set(item) == {"image", "person_id", "image_id", "caption", "word_ids", "index"}
    assert item["image"].shape == (3, H, W)
    r = records[3]
    assert (item["person_id"], item["image_id"], item["caption"], item["word_ids"], item["index"]) == (
        r.person_id, r.image_id, r.caption, list(r.word_ids), 3)
    records[3].image_path.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"cannot read image {records[3].image_path}"):
        ds[3]


def test_collate_word_ids_text_and_clip(authors_root: Path) -> None:
    records = _records(authors_root)[:4]
    tf = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=False)
    items = [CaptionDataset(records, tf)[i] for i in range(4)]
    words = WordTokenizer(Vocabulary.build([r.caption for r in records]), max_length=100)
    batch = collate(items, words, shipped_ids=True)  # the model was trained on the shipped ids
    assert set(batch) == {"images", "person_ids", "image_ids", "indices", "word_ids", "lengths"}
    assert batch["images"].shape == (4, 3, H, W)
    assert batch["person_ids"].tolist() == [r.person_id for r in records]
    assert batch["image_ids"].tolist() == [r.image_id for r in records]
    assert batch["indices"].tolist() == [0, 1, 2, 3]
    # the shipped onehot ids are used as they are
    assert batch["lengths"].tolist() == [len(r.word_ids) for r in records]
    assert batch["word_ids"][0, : len(records[0].word_ids)].tolist() == list(records[0].word_ids)
    # without them (or when told not to) the captions are tokenised
    text_batch = collate(items, words, shipped_ids=False)
    assert torch.equal(text_batch["word_ids"], words([r.caption for r in records])["word_ids"])
    clip_batch = collate(items, ClipTokenizer())
    assert clip_batch["tokens"].shape == (4, 77) and "word_ids" not in clip_batch


def test_gallery_and_queries() -> None:
    recs = [Record(Path(f"/x/{i}.png"), pid, img, f"c{n}", "test") for n, (i, pid, img) in
            enumerate([(5, 1, 5), (5, 1, 5), (2, 0, 2), (7, 1, 7), (2, 0, 2)])]
    gallery, queries = gallery_and_queries(recs)
    assert [(g.image_id, g.image_path, g.person_id) for g in gallery] == [
        (5, Path("/x/5.png"), 1), (2, Path("/x/2.png"), 0), (7, Path("/x/7.png"), 1)]
    assert queries == recs


def test_train_loader_batches(authors_root: Path) -> None:
    records = _records(authors_root)
    tf = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=True)
    tok = WordTokenizer(Vocabulary(["w"] * 15), max_length=100)
    loader = build_train_loader(records, transform=tf, tokenizer=tok, batch_size=8, ims_per_id=4, seed=0,
                                num_workers=0, pin_memory=False, rank=0, world_size=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 1  # 3 ids x 4 captions = 3 groups; 2 distinct ids per batch
    batch = batches[0]
    assert batch["images"].shape == (8, 3, H, W)
    ids = batch["person_ids"].tolist()
    assert ids[:4] == [ids[0]] * 4 and ids[4:] == [ids[4]] * 4 and ids[0] != ids[4]
    assert pickle.loads(pickle.dumps(loader.collate_fn)) is not None  # workers can receive it
    assert loader.batch_sampler.batches_per_epoch == 1


def test_train_loader_with_a_worker(authors_root: Path) -> None:
    records = _records(authors_root)
    tf = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=False)
    tok = WordTokenizer(Vocabulary(["w"] * 15), max_length=100)
    kwargs = {"transform": tf, "tokenizer": tok, "batch_size": 8, "ims_per_id": 4, "seed": 0,
              "pin_memory": False, "rank": 0, "world_size": 1}
    in_process = [b["indices"].tolist() for b in build_train_loader(records, num_workers=0, **kwargs)]
    loader = build_train_loader(records, num_workers=1, **kwargs)
    assert loader.persistent_workers
    assert [b["indices"].tolist() for b in loader] == in_process


def test_train_loader_state_counts_delivered_batches_not_prefetched(tmp_path: Path) -> None:
    write_authors_layout(tmp_path / "datasets" / "cuhkpedes", {"train": list(range(8))}, images_per_id=1)
    records = _records(tmp_path)  # 8 ids x 2 captions -> 8 groups of 2 -> 4 batches of 2 ids
    tf = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=False)
    tok = WordTokenizer(Vocabulary(["w"] * 15), max_length=100)
    kwargs = {"transform": tf, "tokenizer": tok, "batch_size": 4, "ims_per_id": 2, "seed": 3,
              "pin_memory": False, "rank": 0, "world_size": 1}
    loader = build_train_loader(records, num_workers=1, **kwargs)
    full = [b["indices"].tolist() for b in loader]
    assert len(full) == 4
    it = iter(loader)
    first = next(it)["indices"].tolist()  # the worker has fetched further batches by now
    state = loader.batch_sampler.state_dict()
    assert state["consumed"] == 1 and first == full[0]
    del it
    resumed = build_train_loader(records, num_workers=0, **kwargs)
    resumed.batch_sampler.load_state_dict(state)
    assert [b["indices"].tolist() for b in resumed] == full[1:]
    assert resumed.batch_sampler.state_dict()["consumed"] == 4


def test_eval_loaders_order_and_sharding(authors_root: Path) -> None:
    records = _records(authors_root, "test")
    tf = build_transforms(height=H, width=W, mean=MEAN, std=STD, train=False)
    tok = ClipTokenizer()
    full = build_eval_loaders(records, transform=tf, tokenizer=tok, batch_size=3, num_workers=0)
    gallery, queries = gallery_and_queries(records)
    assert full.gallery == gallery and full.queries == queries
    image_batches = list(full.image_loader)
    assert set(image_batches[0]) == {"images", "indices"}
    assert torch.cat([b["indices"] for b in image_batches]).tolist() == list(range(len(gallery)))
    text_batches = list(full.text_loader)
    assert set(text_batches[0]) == {"person_ids", "indices", "tokens"}
    assert torch.cat([b["person_ids"] for b in text_batches]).tolist() == [q.person_id for q in queries]
    parts = [build_eval_loaders(records, transform=tf, tokenizer=tok, batch_size=3, num_workers=0,
                                rank=r, world_size=3) for r in range(3)]
    shard_idx = [i for p in parts for b in p.text_loader for i in b["indices"].tolist()]
    assert shard_idx == list(range(len(queries)))
    shard_img = [i for p in parts for b in p.image_loader for i in b["indices"].tolist()]
    assert shard_img == list(range(len(gallery)))
