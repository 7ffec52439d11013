"""Evaluation: embed a split's unique images and all its captions, then rank (textreid.metrics).

The gallery holds one embedding per unique image id, the queries are every caption of the
split. Under torch.distributed each rank embeds a shard and the features are gathered, so
every rank returns the same metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from textreid import dist
from textreid.data.loaders import build_eval_loaders
from textreid.data.preprocess import Preprocess
from textreid.data.records import Record
from textreid.embeddings import normalise
from textreid.engine.runtime import autocast, init_distributed, setup_logging
from textreid.fileio import atomic_open, atomic_write_json
from textreid.metrics import evaluate, format_table
from textreid.models.state_dict import unwrap_model

log = logging.getLogger("textreid")


@torch.inference_mode()
def embed_split(model: nn.Module, records: list[Record], *, preprocess: Preprocess, batch_size: int = 128,
                num_workers: int = 0, amp: str = "off", channels_last: bool = False,
                progress: bool = False) -> dict[str, torch.Tensor]:
    """Raw (un-normalised) embeddings of a split's unique images and of all its captions.

    ``preprocess``: the spec the model was trained with (test transform, tokenizer, whether shipped
    word ids are fed). ``amp``: "off" = fp32 (TEST.AMP's default on every device).
    """
    core = unwrap_model(model)
    device = next(core.parameters()).device
    was_training = core.training
    core.eval()
    loaders = build_eval_loaders(records, transform=preprocess.transform(), tokenizer=preprocess.text_tokenizer(),
                                 batch_size=batch_size, num_workers=num_workers,
                                 shipped_ids=preprocess.uses_shipped_ids(records), rank=dist.get_rank(),
                                 world_size=dist.get_world_size())
    image_feats, text_feats = [], []
    for batch in tqdm(loaders.image_loader, desc="embed images", disable=not progress, leave=False):
        with autocast(device, amp):
            images = batch["images"].to(device, non_blocking=True)  # [b, 3, H, W]
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            image_feats.append(core.embed_images(images).float())  # [b, D]
    for batch in tqdm(loaders.text_loader, desc="embed texts", disable=not progress, leave=False):
        text = {k: v.to(device) for k, v in batch.items() if k not in ("person_ids", "indices", "image_ids")}
        with autocast(device, amp):
            text_feats.append(core.embed_texts(text).float())  # [b, D]
    core.train(was_training)
    empty = torch.zeros(0, core.embed_dim, device=device)
    return {
        "image_feats": dist.all_gather_variable(torch.cat(image_feats) if image_feats else empty),  # [G, D]
        "image_pids": torch.tensor([g.person_id for g in loaders.gallery]),
        "image_ids": torch.tensor([g.image_id for g in loaders.gallery]),
        "text_feats": dist.all_gather_variable(torch.cat(text_feats) if text_feats else empty),  # [Q, D]
        "text_pids": torch.tensor([r.person_id for r in loaders.queries]),
        "text_image_ids": torch.tensor([r.image_id for r in loaders.queries]),
    }


def evaluate_split(model: nn.Module, records: list[Record], *, preprocess: Preprocess, batch_size: int = 128,
                   num_workers: int = 0, amp: str = "off", channels_last: bool = False,
                   rerank: bool = False, rerank_k: int = 5,
                   rerank_alpha: float = 0.05, progress: bool = False) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metrics for both directions (and re-ranked ones when asked), plus the features."""
    feats = embed_split(model, records, preprocess=preprocess, batch_size=batch_size,
                        num_workers=num_workers, amp=amp,
                        channels_last=channels_last, progress=progress)
    results = evaluate(feats["text_feats"].cpu(), feats["text_pids"], feats["image_feats"].cpu(), feats["image_pids"],
                       rerank=rerank, k=rerank_k, alpha=rerank_alpha)
    return results, feats


def write_features(path: Path, feats: dict[str, torch.Tensor]) -> None:
    """features.npz: normalised text and image embeddings with person ids and image ids."""
    arrays = {k: v.cpu().numpy() for k, v in feats.items()}
    for key in ("image_feats", "text_feats"):
        arrays[key] = normalise(arrays[key])
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def test(cfg, *, checkpoint_file: str, output_dir: Path, rerank: bool = False, save_features: bool = False,
         split: str = "test", device: str = "cpu", progress: bool = True) -> dict:
    """`textreid test`: evaluate our checkpoint or the authors' best.pth on a split; write metrics.json."""
    from textreid.engine.setup import load_model_for_eval

    init_distributed(device)
    output_dir = Path(output_dir)
    setup_logging(output_dir / "test.log" if dist.is_main() else None)
    model, data = load_model_for_eval(cfg, checkpoint_file, device=device, split=split)
    records = data.test if split == "test" else data.val
    if not records:
        raise ValueError(f"the {split} split of {cfg.datasets.test if split == 'test' else cfg.datasets.val} is empty")
    results, feats = evaluate_split(model, records, preprocess=data.preprocess,
                                    batch_size=cfg.test.ims_per_batch, num_workers=cfg.dataloader.num_workers,
                                    amp=cfg.test.amp, rerank=rerank,
                                    rerank_k=cfg.test.rerank_k,
                                    rerank_alpha=cfg.test.rerank_alpha, progress=progress)
    if dist.is_main():
        print(format_table(results))
        atomic_write_json(output_dir / "metrics.json",
                          {"checkpoint": str(checkpoint_file), "split": split, **results})
        if save_features:
            write_features(output_dir / "features.npz", feats)
            log.info("wrote %s", output_dir / "features.npz")
        log.info("wrote %s", output_dir / "metrics.json")
    return results
