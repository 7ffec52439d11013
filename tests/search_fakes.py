"""A colour fake encoder shared by the search tests, so the right answer is known in advance.

Image embedding = normalised histogram of palette colours; text embedding = normalised counts of
colour words. It implements the Encoder protocol of ``textreid.api`` (encode_images/encode_text).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 60, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOURS = list(PALETTE)
# The words the fake "model" knows: the colours and the words of pair_query and of typical queries.
VOCAB = {*COLOURS, "a", "an", "person", "wearing", "and", "in", "with", "man", "woman", "coat"}
_RGB = np.array(list(PALETTE.values()), dtype=np.float32)  # [C, 3]


def colour_histogram(image: Image.Image | str | Path) -> np.ndarray:
    """Normalised histogram of nearest palette colours over the pixels."""
    im = image if isinstance(image, Image.Image) else Image.open(image)
    px = np.asarray(im.convert("RGB"), dtype=np.float32).reshape(-1, 3)  # [P, 3]
    nearest = np.argmin(((px[:, None, :] - _RGB[None]) ** 2).sum(-1), axis=1)  # [P]
    h = np.bincount(nearest, minlength=len(PALETTE)).astype(np.float32)
    return h / np.linalg.norm(h)


class ColourEncoder:
    """Deterministic stand-in for ``textreid.api.Encoder`` that counts its work."""

    embed_dim = len(PALETTE)

    def __init__(self, checkpoint_path: str | Path | None = None, fail_after: int | None = None):
        self.checkpoint_path = checkpoint_path
        self.fail_after = fail_after  # raise once this many images were embedded
        self.images_seen = 0
        self.text_calls = 0

    def encode_images(self, images: list, batch_size: int = 64) -> torch.Tensor:
        if self.fail_after is not None and self.images_seen >= self.fail_after:
            raise RuntimeError("simulated encoder failure")
        self.images_seen += len(images)
        return torch.from_numpy(np.stack([colour_histogram(im) for im in images]))

    def ignored_words(self, text: str) -> list[str]:
        """Like ``textreid.api.Encoder``: unknown words, refusing a text with no known word."""
        from textreid.search.query import vocabulary_check

        return vocabulary_check(VOCAB, text)

    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        for t in texts:
            self.ignored_words(t)
        self.text_calls += 1
        rows = []
        for t in texts:
            words = t.lower().replace(",", " ").split()
            v = np.array([words.count(c) for c in COLOURS], dtype=np.float32) + 1e-3
            rows.append(v / np.linalg.norm(v))
        return torch.from_numpy(np.stack(rows))


def person_image(path: Path, top: str, bottom: str, size: tuple[int, int] = (16, 36)) -> Path:
    """A 16x36 'pedestrian': top two thirds in ``top``, bottom third in ``bottom``."""
    w, h = size
    a = np.empty((h, w, 3), dtype=np.uint8)
    a[: 2 * h // 3] = PALETTE[top]
    a[2 * h // 3 :] = PALETTE[bottom]
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}
    Image.fromarray(a).save(path, format=fmt[path.suffix.lower()], quality=95)
    return path


_EXTS = [".png", ".jpg", ".JPG", ".webp", ".bmp", ".jpeg"]


def make_gallery(folder: Path) -> dict[tuple[str, str], Path]:
    """One image per unordered colour pair (15), in nested folders and mixed formats,
    plus three unusable files and one non-image extension. Returns {(top, bottom): path}."""
    out = {}
    for i, (a, b) in enumerate(itertools.combinations(COLOURS, 2)):
        sub = folder / f"cam{i % 3}" / ("deep" if i % 4 == 0 else "")
        out[(a, b)] = person_image(sub / f"{a}_{b}{_EXTS[i % len(_EXTS)]}", a, b)
    good = person_image(folder / "cam0" / "trunc_src.jpg", "red", "blue")
    data = good.read_bytes()
    good.unlink()
    (folder / "cam0" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "cam1" / "empty.png").write_bytes(b"")
    (folder / "cam2" / "notes.jpg").write_text("this is not an image\n")
    (folder / "cam2" / "readme.txt").write_text("ignored: not an image extension\n")
    return out


def pair_query(a: str, b: str) -> str:
    return f"a person wearing {a} and {b}"
