"""Synthetic pedestrians: a deterministic generator of drawn people, captions and both dataset layouts.

No real text-based person search dataset can be downloaded by the project, so this module is the
built-in data for the demo and the tests. Each person is a set of attributes (gender, hair, top,
bottom, shoes, optional hat, bag and glasses); every image of that person is drawn from those
attributes with PIL under a different view (front/back/side), pose, scale, position, background,
lighting, blur and noise; every image gets two captions written from the same attributes. About
30 % of the persons of each split are "siblings": copies of an earlier person of the same split
with one or two attributes changed, so retrieval needs the fine details.

Output (``out_dir`` is the dataset folder, e.g. ``data/datasets/synth``)::

    annotations/{train,val,test}.json   the authors' CUHK-PEDES layout, one entry per caption
    clip_vocab_vit.npy                  float32 [V, 512] pseudo word vectors (see word_vectors)
    reid_raw.json                       the raw layout: one record per image, two captions each
    imgs/synth/cam_{a,b}/pNNNNN_KK.jpg  the images (camera a: even image index, b: odd)
    attributes.json                     ground truth per person (also marks the folder as ours)
    preview.jpg                         contact sheet of a few persons

Determinism: a person is a function of (seed, person id) and of the earlier persons of its split;
an image and its captions are functions of (seed, person id, image index) only, so the bytes do
not depend on the number of worker processes. ``image_size`` is (height, width), as in the SPEC.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from textreid.fileio import atomic_write_bytes

GENERATOR = "textreid.data.synth"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
VIEWS = ("front", "back", "side")
SIBLING_FRACTION = 0.3  # share of each split's persons that copy an earlier one with 1-2 changes
EMBED_DIM = 512
IMAGE_FOLDER = "synth"  # under imgs/, like the real data's CUHK01/, Market/ ...
JPEG_QUALITY = 90
_SUPERSAMPLE = 2  # draw at 2x and reduce: cheap anti-aliasing

# ----------------------------------------------------------------------------- attributes
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (238, 238, 232),
    "grey": (128, 128, 130),
    "red": (200, 32, 38),
    "blue": (38, 72, 190),
    "green": (42, 140, 64),
    "yellow": (236, 200, 44),
    "pink": (236, 130, 172),
    "purple": (118, 52, 150),
    "brown": (112, 74, 42),
    "orange": (240, 128, 32),
}
# Real clothing is mostly dark or neutral; keep every colour frequent enough to be learnable.
_COLOUR_WEIGHTS = {"black": 2.0, "white": 1.6, "grey": 1.4, "blue": 1.4, "red": 1.0, "green": 0.8,
                   "yellow": 0.6, "pink": 0.7, "purple": 0.6, "brown": 0.9, "orange": 0.5}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (24, 20, 18),
    "brown": (96, 60, 34),
    "blonde": (214, 178, 104),
    "grey": (158, 158, 154),
}
_SKIN_TONES = ((241, 205, 180), (224, 172, 138), (198, 140, 100), (160, 105, 70), (110, 72, 48))

_TOPS = {
    "man": ("t-shirt", "shirt", "jacket", "coat", "hoodie", "sweater"),
    "woman": ("t-shirt", "shirt", "blouse", "jacket", "coat", "hoodie", "sweater", "dress"),
}
_SLEEVES = {"t-shirt": ("short",), "shirt": ("short", "long"), "blouse": ("short", "long", "sleeveless"),
            "jacket": ("long",), "coat": ("long",), "hoodie": ("long",), "sweater": ("long",),
            "dress": ("short", "sleeveless")}
_PATTERNS = {"t-shirt": ("plain", "stripes", "logo"), "shirt": ("plain", "stripes", "checks"),
             "blouse": ("plain", "stripes"), "jacket": ("plain",), "coat": ("plain",),
             "hoodie": ("plain", "stripes", "logo"), "sweater": ("plain", "stripes", "checks"),
             "dress": ("plain", "stripes", "checks")}
_OPEN_TOPS = ("jacket", "coat")  # may be worn open over an inner top of another colour
_BOTTOMS = {"man": ("trousers", "jeans", "shorts"), "woman": ("trousers", "jeans", "shorts", "skirt")}
_JEANS_COLOURS = ("blue", "black", "grey")
_SHOES = ("sneakers", "boots", "shoes")
_SHOE_COLOURS = ("black", "white", "brown", "grey", "red", "blue")
_HATS = ("cap", "beanie", "hat")
_BAGS = ("backpack", "handbag", "shoulder bag")

ATTRIBUTE_KEYS = ("gender", "hair_colour", "hair_length", "top_type", "top_colour", "sleeves",
                  "top_pattern", "pattern_colour", "inner_colour", "bottom_type", "bottom_colour",
                  "shoes_type", "shoes_colour", "hat_type", "hat_colour", "bag_type", "bag_colour",
                  "glasses")


def _colour_options(exclude: object = None) -> tuple[list[str], list[float]]:
    names = [c for c in COLOURS if c != exclude]
    return names, [_COLOUR_WEIGHTS[c] for c in names]


def _options(key: str, a: dict[str, Any]) -> tuple[list[Any], list[float]]:
    """Allowed values of attribute ``key`` given the keys before it (ATTRIBUTE_KEYS order), with weights."""
    g = a.get("gender")
    if key == "gender":
        return ["man", "woman"], [1.0, 1.0]
    if key == "hair_colour":
        return list(HAIR_COLOURS), [0.45, 0.3, 0.15, 0.1]
    if key == "hair_length":
        return ["short", "long"], ([0.88, 0.12] if g == "man" else [0.2, 0.8])
    if key == "top_type":
        tops = list(_TOPS[g])
        return tops, [0.8 if t == "dress" else 1.0 for t in tops]
    if key == "top_colour":
        return _colour_options()
    if key == "sleeves":
        return list(_SLEEVES[a["top_type"]]), [1.0] * len(_SLEEVES[a["top_type"]])
    if key == "top_pattern":
        pats = list(_PATTERNS[a["top_type"]])
        rest = (0.45 / (len(pats) - 1)) if len(pats) > 1 else 0.0
        return pats, [0.55 if p == "plain" else rest for p in pats] if len(pats) > 1 else [1.0]
    if key == "pattern_colour":
        return ([None], [1.0]) if a["top_pattern"] == "plain" else _colour_options(a["top_colour"])
    if key == "inner_colour":
        if a["top_type"] not in _OPEN_TOPS:
            return [None], [1.0]
        names, w = _colour_options(a["top_colour"])
        return [None, *names], [sum(w) * 0.7, *w]
    if key == "bottom_type":
        return ([None], [1.0]) if a["top_type"] == "dress" else (list(_BOTTOMS[g]), [1.0] * len(_BOTTOMS[g]))
    if key == "bottom_colour":
        if a["bottom_type"] is None:
            return [None], [1.0]
        if a["bottom_type"] == "jeans":
            return list(_JEANS_COLOURS), [3.0, 1.5, 1.0]
        return _colour_options()
    if key == "shoes_type":
        return list(_SHOES), [1.2, 0.8, 1.0]
    if key == "shoes_colour":
        return list(_SHOE_COLOURS), [2.0, 1.8, 1.0, 0.8, 0.5, 0.5]
    if key == "hat_type":
        return [None, *_HATS], [0.72, 0.12, 0.09, 0.07]
    if key == "hat_colour":
        return ([None], [1.0]) if a["hat_type"] is None else _colour_options()
    if key == "bag_type":
        return [None, *_BAGS], ([0.45, 0.3, 0.05, 0.2] if g == "man" else [0.35, 0.2, 0.25, 0.2])
    if key == "bag_colour":
        return ([None], [1.0]) if a["bag_type"] is None else _colour_options()
    if key == "glasses":
        return [False, True], [0.8, 0.2]
    raise KeyError(f"unknown attribute {key!r}; valid: {', '.join(ATTRIBUTE_KEYS)}")


def _weighted(rng: np.random.Generator, values: Sequence[Any], weights: Sequence[float]) -> Any:
    w = np.asarray(weights, dtype=np.float64)
    return values[int(rng.choice(len(values), p=w / w.sum()))]


def _pick(rng: np.random.Generator, values: Sequence[Any]) -> Any:
    return values[int(rng.integers(len(values)))]


def _fill(a: dict[str, Any], rng: np.random.Generator, force: str | None = None) -> dict[str, Any] | None:
    """Sample missing or no-longer-valid keys in order; ``force`` must take a new value (None if impossible)."""
    a = dict(a)
    for key in ATTRIBUTE_KEYS:
        values, weights = _options(key, a)
        if key == force:
            keep = [i for i, v in enumerate(values) if v != a.get(key)]
            if not keep:
                return None
            a[key] = _weighted(rng, [values[i] for i in keep], [weights[i] for i in keep])
        elif key not in a or a[key] not in values:
            a[key] = _weighted(rng, values, weights)
    return a


def attribute_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of the attributes on which two persons differ."""
    return [k for k in ATTRIBUTE_KEYS if a.get(k) != b.get(k)]


def _mutate(parent: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A sibling: the parent's attributes with one or two of them changed (dependants kept valid)."""
    target = 1 if rng.random() < 0.55 else 2
    keys = [k for k in ATTRIBUTE_KEYS if k != "gender"]
    for _ in range(200):
        child: dict[str, Any] | None = dict(parent)
        for _ in range(target):
            child = _fill(child, rng, force=_pick(rng, keys)) if child is not None else None
        if child is not None and 1 <= len(attribute_diff(parent, child)) <= 2:
            return child
    # Every person has a top colour, and recolouring it invalidates nothing else.
    child = _fill(parent, rng, force="top_colour")
    assert child is not None
    return child


def _sample_render(rng: np.random.Generator) -> dict[str, Any]:
    """Per-person drawing details that captions do not name (skin, build, exact shades)."""
    parts = ("hair", "top", "pattern", "inner", "bottom", "shoes", "hat", "bag")
    return {
        "skin": list(_pick(rng, _SKIN_TONES)),
        "build": round(float(rng.uniform(0.92, 1.08)), 4),
        "height": round(float(rng.uniform(0.95, 1.04)), 4),
        "shade": {p: round(float(rng.uniform(0.8, 1.16)), 4) for p in parts},
        "logo": _pick(rng, ("circle", "square", "star", "bar")),
        "bag_side": _pick(rng, (-1, 1)),
        "view_offset": int(rng.integers(len(VIEWS))),
    }


def sample_person(seed: int, person_id: int) -> dict[str, Any]:
    """A fresh random person (no sibling logic): ``{"id", "attributes", "render"}``."""
    rng = np.random.default_rng([seed, person_id, 0])
    attrs = _fill({}, rng)
    assert attrs is not None
    return {"id": person_id, "attributes": attrs, "render": _sample_render(rng)}


def _split_sizes(num_ids: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    if num_ids < 3:
        raise ValueError(f"num_ids must be at least 3 (one person each for train, val and test), got {num_ids}")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    n_val = max(1, round(num_ids * val_fraction))
    n_test = max(1, round(num_ids * test_fraction))
    n_train = num_ids - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training persons "
            f"out of num_ids={num_ids} ({n_val} val + {n_test} test); lower the fractions or raise num_ids"
        )
    return {"train": n_train, "val": n_val, "test": n_test}


def _signature(a: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(a[k] for k in ATTRIBUTE_KEYS)


def _make_persons(seed: int, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """All persons, ids contiguous in split order (train 0..N_train-1, then val, then test)."""
    persons: list[dict[str, Any]] = []
    start = 0
    for split_index, split in enumerate(SPLITS):
        n = sizes[split]
        split_rng = np.random.default_rng([seed, split_index, 7])
        n_sib = min(n - 1, round(SIBLING_FRACTION * n))
        sib_slots = set(split_rng.choice(np.arange(1, n), size=n_sib, replace=False).tolist()) if n_sib else set()
        members: list[dict[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        for j in range(n):
            pid = start + j
            rng = np.random.default_rng([seed, pid, 0])
            parent = None
            for _ in range(50):  # persons of one split are all distinct
                if j in sib_slots:
                    parent = _pick(rng, members)
                    attrs = _mutate(parent["attributes"], rng)
                else:
                    attrs = _fill({}, rng)
                if _signature(attrs) not in seen:
                    break
            seen.add(_signature(attrs))
            person = {
                "id": pid,
                "split": split,
                "sibling_of": None if parent is None else parent["id"],
                "changed": [] if parent is None else attribute_diff(parent["attributes"], attrs),
                "attributes": attrs,
                "render": _sample_render(rng),
            }
            members.append(person)
        persons.extend(members)
        start += n
    return persons


# ----------------------------------------------------------------------------- drawing
def _shade(rgb: Sequence[int], s: float) -> tuple[int, int, int]:
    """Darken (s < 1) by scaling, lighten (s > 1) by mixing towards white, so both stay visible."""
    t = min(1.0, (s - 1.0) * 1.6)
    r, g, b = (int(max(0, min(255, c * s if s <= 1.0 else c + (255 - c) * t))) for c in rgb)
    return (r, g, b)


Y_SH = 0.185  # shoulder line, in person heights from the top of the head
Y_HIP = 0.49
LEG_LEN = 0.47
ARM_LEN = 0.32


class _Painter:
    """Draws in person units: x in person heights (times build) from the body axis, y from the top of the head."""

    def __init__(self, canvas: Image.Image, cx: float, top: float, ph: float, build: float, facing: int):
        self.canvas = canvas
        self.d = ImageDraw.Draw(canvas)
        self.cx, self.top, self.ph, self.bw, self.facing = cx, top, ph, build, facing

    def pt(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.facing * x * self.ph * self.bw, self.top + y * self.ph)

    def px(self, v: float) -> int:
        return max(1, round(v * self.ph))

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        (a, b), (c, d) = self.pt(x0, y0), self.pt(x1, y1)
        return [min(a, c), min(b, d), max(a, c), max(b, d)]

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: Any, outline: Any = None,
                width: float = 0.0, draw: ImageDraw.ImageDraw | None = None) -> None:
        (draw or self.d).ellipse(self.box(x - rx, y - ry, x + rx, y + ry), fill=fill, outline=outline,
                                 width=self.px(width) if outline is not None else 0)

    def chord(self, x: float, y: float, rx: float, ry: float, start: float, end: float, fill: Any) -> None:
        if self.facing < 0:  # mirror the angles with the drawing
            start, end = (180 - end) % 360, (180 - start) % 360
        self.d.chord(self.box(x - rx, y - ry, x + rx, y + ry), start=start, end=end, fill=fill)

    def poly(self, pts: Sequence[tuple[float, float]], fill: Any, outline: Any = None,
             draw: ImageDraw.ImageDraw | None = None) -> None:
        (draw or self.d).polygon([self.pt(x, y) for x, y in pts], fill=fill, outline=outline,
                                 width=1 if outline is not None else 0)

    def rrect(self, x0: float, y0: float, x1: float, y1: float, r: float, fill: Any, outline: Any = None,
              width: float = 0.004) -> None:
        self.d.rounded_rectangle(self.box(x0, y0, x1, y1), radius=self.px(r), fill=fill, outline=outline,
                                 width=self.px(width) if outline is not None else 0)

    def line(self, pts: Sequence[tuple[float, float]], fill: Any, width: float) -> None:
        self.d.line([self.pt(x, y) for x, y in pts], fill=fill, width=self.px(width), joint="curve")

    def limb(self, x0: float, y0: float, angle: float, length: float, w0: float, w1: float,
             segments: Sequence[tuple[float, float, Any]]) -> tuple[float, float]:
        """A tapered limb from (x0, y0) at ``angle`` degrees from straight down; coloured by [t0, t1) segments."""
        a = math.radians(angle)
        dx, dy = math.sin(a), math.cos(a)
        nx, ny = dy, -dx
        for t0, t1, colour in segments:
            if t1 <= t0:
                continue
            h0, h1 = (w0 + (w1 - w0) * t0) / 2, (w0 + (w1 - w0) * t1) / 2
            p0 = (x0 + dx * length * t0, y0 + dy * length * t0)
            p1 = (x0 + dx * length * t1, y0 + dy * length * t1)
            self.poly([(p0[0] + nx * h0, p0[1] + ny * h0), (p1[0] + nx * h1, p1[1] + ny * h1),
                       (p1[0] - nx * h1, p1[1] - ny * h1), (p0[0] - nx * h0, p0[1] - ny * h0)],
                      fill=colour, outline=_shade(colour, 0.7))
        return (x0 + dx * length, y0 + dy * length)


def _background(rng: np.random.Generator, w: int, h: int, cam: int, horizon: int) -> tuple[Image.Image, tuple]:
    """A street/indoor backdrop with a ground line; camera b is warmer and more often indoors."""
    walls_out = ((150, 155, 160), (175, 170, 160), (120, 130, 140), (160, 120, 100), (140, 150, 130),
                 (200, 200, 195), (90, 95, 100))
    walls_in = ((215, 205, 185), (230, 225, 215), (190, 175, 160), (170, 180, 190), (200, 190, 200),
                (140, 125, 110))
    floors = ((110, 110, 112), (150, 145, 135), (90, 85, 80), (175, 165, 150), (125, 120, 105), (70, 75, 80))
    wall = np.array(_pick(rng, walls_out if rng.random() < (0.75 if cam == 0 else 0.3) else walls_in),
                    dtype=np.float32) + rng.uniform(-18, 18, 3).astype(np.float32)
    floor = np.array(_pick(rng, floors), dtype=np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    grad = (1.0 + rng.uniform(-0.18, 0.18) * (np.arange(h, dtype=np.float32) / h - 0.5))[:, None, None]
    arr = np.empty((h, w, 3), dtype=np.float32)
    arr[:horizon] = wall
    arr[horizon:] = floor
    arr *= grad
    # Low-frequency mottling so the background is never a flat colour.
    coarse = rng.normal(0.0, rng.uniform(2, 14), size=(max(2, h // 24), max(2, w // 24), 1)).astype(np.float32)
    tex = np.asarray(Image.fromarray(coarse[..., 0]).resize((w, h), Image.Resampling.BILINEAR))
    arr += tex[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    wall_t = tuple(int(c) for c in np.clip(wall, 0, 255))
    kind = _pick(rng, ("plain", "bricks", "windows", "panels", "trees" if cam == 0 else "shelves"))
    if kind == "bricks":
        mortar = _shade(wall_t, 0.78)
        bh = max(4, int(h * rng.uniform(0.025, 0.045)))
        bw = bh * 3
        for row, y in enumerate(range(0, horizon, bh)):
            d.line([(0, y), (w, y)], fill=mortar, width=1)
            for x in range((row % 2) * bw // 2, w, bw):
                d.line([(x, y), (x, y + bh)], fill=mortar, width=1)
    elif kind == "windows":
        for _ in range(int(rng.integers(1, 3))):
            x0 = int(rng.uniform(-0.3, 0.7) * w)
            y0 = int(rng.uniform(0.05, 0.4) * horizon)
            ww, hh = int(rng.uniform(0.3, 0.7) * w), int(rng.uniform(0.25, 0.5) * horizon)
            glass = tuple(int(c) for c in rng.uniform(50, 110, 3))
            d.rectangle([x0, y0, x0 + ww, y0 + hh], fill=glass, outline=_shade(wall_t, 0.6), width=3)
            d.line([(x0 + ww // 2, y0), (x0 + ww // 2, y0 + hh)], fill=_shade(wall_t, 0.6), width=2)
    elif kind == "panels":
        pw = max(6, int(w * rng.uniform(0.12, 0.3)))
        for i, x in enumerate(range(int(rng.integers(pw)) - pw, w, pw)):
            if i % 2:
                d.rectangle([x, 0, x + pw, horizon], fill=_shade(wall_t, 0.9))
    elif kind == "trees":
        for _ in range(int(rng.integers(2, 5))):
            x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(0.0, 0.45) * horizon
            r = rng.uniform(0.12, 0.3) * w
            leaf = tuple(int(c) for c in (rng.uniform(40, 90), rng.uniform(90, 140), rng.uniform(40, 80)))
            d.ellipse([x - r, y - r, x + r, y + r], fill=leaf)
    elif kind == "shelves":
        for y in np.linspace(0.1, 0.85, int(rng.integers(3, 6))) * horizon:
            d.rectangle([0, int(y), w, int(y) + 3], fill=_shade(wall_t, 0.65))
    # ground: a kerb line and, sometimes, floor tiles receding in perspective
    d.line([(0, horizon), (w, horizon)], fill=_shade(tuple(int(c) for c in floor), 0.7), width=2)
    if rng.random() < 0.5:
        step = 4.0
        y = float(horizon)
        while y < h:
            y += step
            step *= 1.35
            d.line([(0, int(y)), (w, int(y))], fill=_shade(tuple(int(c) for c in floor), 0.85), width=1)
    if rng.random() < 0.2:  # a pole at one side
        x = int(_pick(rng, (rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0))) * w)
        pole = tuple(int(c) for c in rng.uniform(40, 120, 3))
        d.rectangle([x, 0, x + max(3, w // 20), horizon + int(0.05 * h)], fill=pole)
    return img, tuple(int(c) for c in np.clip(floor, 0, 255))


def _garment(p: _Painter, shapes: Sequence[Sequence[tuple[float, float]]], colour: tuple, pattern: str,
             pattern_colour: tuple | None, logo: str, view: str, y_range: tuple[float, float]) -> None:
    """Fill ``shapes`` with the garment colour and its pattern (stripes, checks, a front logo)."""
    size = p.canvas.size
    mask = Image.new("L", size, 0)
    md = ImageDraw.Draw(mask)
    for s in shapes:
        p.poly(s, fill=255, draw=md)
    layer = Image.new("RGB", size, colour)
    ld = ImageDraw.Draw(layer)
    y0, y1 = y_range
    if pattern == "stripes" and pattern_colour is not None:
        period = 0.034
        y = y0 + 0.012
        while y < y1:
            ld.rectangle([0, p.pt(0, y)[1], size[0], p.pt(0, y + period * 0.45)[1]], fill=pattern_colour)
            y += period
    elif pattern == "checks" and pattern_colour is not None:
        period = 0.036
        y = y0 + 0.01
        while y < y1:
            ld.rectangle([0, p.pt(0, y)[1], size[0], p.pt(0, y + 0.009)[1]], fill=pattern_colour)
            y += period
        for i in range(-8, 9):
            x = p.pt(i * period, 0)[0]
            ld.rectangle([x, 0, x + p.px(0.009), size[1]], fill=pattern_colour)
    elif pattern == "logo" and pattern_colour is not None and view != "back":
        cx = 0.0 if view == "front" else 0.015
        cy, r = Y_SH + 0.1, 0.03
        if logo == "circle":
            p.ellipse(cx, cy, r, r, fill=pattern_colour, draw=ld)
        elif logo == "square":
            p.poly([(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)], pattern_colour, draw=ld)
        elif logo == "star":
            pts = [(cx + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
                    cy - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
            p.poly(pts, pattern_colour, draw=ld)
        else:
            p.poly([(cx - 1.4 * r, cy - 0.5 * r), (cx + 1.4 * r, cy - 0.5 * r), (cx + 1.4 * r, cy + 0.5 * r),
                    (cx - 1.4 * r, cy + 0.5 * r)], pattern_colour, draw=ld)
    p.canvas.paste(layer, (0, 0), mask)
    for s in shapes:
        p.poly(s, fill=None, outline=_shade(colour, 0.6))


def _torso_shapes(a: dict[str, Any], view: str, sw: float, waist: float, hw: float
                  ) -> tuple[list[list[tuple[float, float]]], float]:
    """Polygons of the top garment (and the skirt of a dress); returns them and the hem height."""
    t = a["top_type"]
    hem = {"coat": 0.76, "dress": 0.46}.get(t, 0.53)
    if view == "side":
        body = [(-0.03, Y_SH - 0.022), (0.03, Y_SH - 0.022), (0.056, Y_SH + 0.012), (0.062, 0.30),
                (0.05, 0.40), (0.053, min(hem, 0.53))]
        if t == "coat":
            body += [(0.07, hem), (-0.07, hem)]
        else:
            body += [(-0.056, min(hem, 0.53))]
        body += [(-0.06, 0.30), (-0.05, Y_SH + 0.006)]
        shapes = [body]
        if t == "dress":
            shapes.append([(-0.055, 0.42), (0.055, 0.42), (0.085, 0.70), (-0.085, 0.70)])
        return shapes, hem
    right = [(0.028, Y_SH - 0.022), (sw - 0.012, Y_SH - 0.007), (sw, Y_SH + 0.02), (sw - 0.008, 0.29),
             (waist, 0.38), (hw, min(hem, 0.50))]
    if t == "coat":
        right += [(hw + 0.022, hem)]
    else:
        right += [(hw, hem)]
    body = right + [(-x, y) for x, y in reversed(right)]
    shapes = [body]
    if t == "dress":
        shapes.append([(-waist, 0.42), (waist, 0.42), (hw + 0.045, 0.70), (-hw - 0.045, 0.70)])
    return shapes, hem


def _draw_person(canvas: Image.Image, person: dict[str, Any], view: str, rng: np.random.Generator,
                 placement: tuple[float, float, float, int]) -> None:
    a, r = person["attributes"], person["render"]
    cx, top, ph, facing = placement
    p = _Painter(canvas, cx, top, ph, r["build"], facing)
    sh = r["shade"]
    skin = tuple(r["skin"])
    hair = _shade(HAIR_COLOURS[a["hair_colour"]], sh["hair"])
    top_c = _shade(COLOURS[a["top_colour"]], sh["top"])
    pat_c = _shade(COLOURS[a["pattern_colour"]], sh["pattern"]) if a["pattern_colour"] else None
    # a missing garment's colour is never drawn; skin keeps the variables typed as colours
    bot_c = _shade(COLOURS[a["bottom_colour"]], sh["bottom"]) if a["bottom_colour"] else skin
    shoe_c = _shade(COLOURS[a["shoes_colour"]], sh["shoes"])
    man = a["gender"] == "man"
    sw, waist, hw = (0.105, 0.085, 0.082) if man else (0.09, 0.07, 0.088)
    side = view == "side"
    long_hair = a["hair_length"] == "long"
    bag = a["bag_type"]
    bag_c = _shade(COLOURS[a["bag_colour"]], sh["bag"]) if bag else skin
    dark = (30, 28, 28)

    # pose
    if side:
        stride = float(rng.uniform(4, 24))
        swing = stride * float(rng.uniform(0.6, 1.0))
        leg_angles = [(-stride, 0.0, 0.85), (stride, 0.0, 1.0)]  # (angle, hip x, shade): back leg first
        arm_angles = [(swing, 0.82), (-swing, 1.0)]  # far arm first
    else:
        spread = float(rng.uniform(0.0, 5.0))
        leg_angles = [(-spread - float(rng.uniform(0, 2)), -0.042, 1.0),
                      (spread + float(rng.uniform(0, 2)), 0.042, 1.0)]
        arm_angles = [(-float(rng.uniform(3, 12)), 1.0), (float(rng.uniform(3, 12)), 1.0)]

    # long hair hanging behind the head (front view: visible beside the neck)
    if long_hair and view == "front":
        p.rrect(-0.064, 0.02, 0.064, 0.25, 0.03, fill=hair)

    # backpack peeking out behind the shoulders
    if bag == "backpack" and view == "front":
        p.rrect(-sw - 0.012, Y_SH - 0.015, sw + 0.012, 0.42, 0.03, fill=bag_c, outline=_shade(bag_c, 0.6))

    # legs and shoes
    btype = a["bottom_type"]
    boots = a["shoes_type"] == "boots"
    for angle, hx, s in leg_angles:
        if btype in ("trousers", "jeans"):
            cloth_end = 1.0
        elif btype == "shorts":
            cloth_end = 0.38
        else:
            cloth_end = 0.0
        segs: list[tuple[float, float, Any]] = []
        leg_skin = _shade(skin, s)
        if cloth_end > 0:
            segs.append((0.0, cloth_end, _shade(bot_c, s)))
        segs.append((cloth_end, 1.0, leg_skin))
        if boots:
            segs = [(t0, min(t1, 0.76), c) for t0, t1, c in segs] + [(0.76, 1.0, _shade(shoe_c, s))]
        ex, ey = p.limb(hx, Y_HIP, angle, LEG_LEN, 0.078, 0.052, segs)
        if btype == "jeans":  # a light seam down the leg tells jeans from trousers
            p.line([(hx + (ex - hx) * 0.1, Y_HIP + 0.03), (ex, ey - 0.02)],
                   fill=_shade(bot_c, 1.25 * s), width=0.006)
        fx = ex + (0.022 if side else 0.0)
        rx = 0.05 if side else 0.036
        p.ellipse(fx, ey + 0.013, rx, 0.02, fill=_shade(shoe_c, s), outline=_shade(shoe_c, 0.55), width=0.003)
        if a["shoes_type"] == "sneakers":
            sole = (245, 245, 245) if a["shoes_colour"] != "white" else (150, 150, 150)
            p.line([(fx - rx * 0.9, ey + 0.028), (fx + rx * 0.9, ey + 0.028)], fill=sole, width=0.008)
        elif a["shoes_type"] == "shoes":
            p.ellipse(fx + rx * 0.3, ey + 0.008, rx * 0.25, 0.005, fill=_shade(shoe_c, 1.35 * s))
    if btype in ("trousers", "jeans", "shorts") and not side:
        p.poly([(-hw + 0.005, 0.47), (hw - 0.005, 0.47), (hw - 0.01, 0.55), (-hw + 0.01, 0.55)], fill=bot_c)
    if btype == "skirt":
        pts = ([(-0.06, 0.47), (0.056, 0.47), (0.085, 0.68), (-0.085, 0.68)] if side
               else [(-hw - 0.004, 0.47), (hw + 0.004, 0.47), (hw + 0.042, 0.68), (-hw - 0.042, 0.68)])
        p.poly(pts, fill=bot_c, outline=_shade(bot_c, 0.6))

    # far arm (side view) goes behind the body
    sleeve_t = {"long": 0.9, "short": 0.38, "sleeveless": 0.0}[a["sleeves"]]

    def arm(x0: float, angle: float, s: float) -> tuple[float, float]:
        segs = [(0.0, sleeve_t, _shade(top_c, s)), (sleeve_t, 1.0, _shade(skin, s))]
        if a["top_type"] == "sweater":
            segs.insert(1, (sleeve_t - 0.06, sleeve_t, _shade(top_c, 0.75 * s)))
        if sleeve_t > 0:
            p.ellipse(x0, Y_SH + 0.012, 0.026, 0.026, fill=_shade(top_c, s))
        hx, hy = p.limb(x0, Y_SH + 0.012, angle, ARM_LEN, 0.052, 0.04, segs)
        p.ellipse(hx, hy, 0.022, 0.024, fill=_shade(skin, s))
        return hx, hy

    hands: list[tuple[float, float]] = []
    if side:
        hands.append(arm(-0.005, arm_angles[0][0], arm_angles[0][1]))

    # backpack on the back (side view) sits behind the torso
    if bag == "backpack" and side:
        p.rrect(-0.125, 0.19, -0.04, 0.43, 0.025, fill=bag_c, outline=_shade(bag_c, 0.55))
        p.rrect(-0.13, 0.31, -0.09, 0.41, 0.015, fill=_shade(bag_c, 0.85))

    # neck, torso, garment details
    p.poly([(-0.02, 0.11), (0.02, 0.11), (0.022, Y_SH), (-0.022, Y_SH)], fill=skin)
    if a["top_type"] == "hoodie" and view != "front":
        hx0 = -0.035 if side else 0.0
        p.ellipse(hx0, Y_SH + (0.0 if side else 0.02), 0.032 if side else 0.05, 0.035 if side else 0.045,
                  fill=_shade(top_c, 0.8), outline=_shade(top_c, 0.6), width=0.003)
    shapes, hem = _torso_shapes(a, view, sw, waist, hw)
    y_end = 0.70 if a["top_type"] == "dress" else hem
    _garment(p, shapes, top_c, a["top_pattern"], pat_c, r["logo"], view, (Y_SH - 0.03, y_end))
    if a["top_type"] == "hoodie" and view == "back":  # the hood lies on the upper back, over the body
        p.ellipse(0.0, Y_SH + 0.03, 0.05, 0.045, fill=_shade(top_c, 0.82), outline=_shade(top_c, 0.6), width=0.003)
    _details(p, a, view, top_c, hem, sh)

    # arms
    if side:
        hands.append(arm(-0.005, arm_angles[1][0], arm_angles[1][1]))
    else:
        hands.append(arm(-(sw - 0.018), arm_angles[0][0], 1.0))
        hands.append(arm(sw - 0.018, arm_angles[1][0], 1.0))

    # bags
    bside = r["bag_side"]
    if bag == "backpack" and view == "back":
        p.rrect(-0.078, 0.2, 0.078, 0.43, 0.03, fill=bag_c, outline=_shade(bag_c, 0.55), width=0.006)
        p.rrect(-0.055, 0.33, 0.055, 0.41, 0.02, fill=_shade(bag_c, 0.85), outline=_shade(bag_c, 0.55))
        p.line([(-0.02, 0.2), (-0.02, 0.185), (0.02, 0.185), (0.02, 0.2)], fill=_shade(bag_c, 0.7), width=0.008)
    elif bag == "backpack" and view == "front":
        for sx in (-1, 1):
            p.line([(sx * (sw - 0.032), Y_SH - 0.01), (sx * (sw - 0.038), 0.37)], fill=bag_c, width=0.018)
    elif bag == "backpack":
        p.line([(0.0, Y_SH - 0.005), (0.03, 0.36)], fill=bag_c, width=0.014)
    elif bag == "shoulder bag":
        if side:
            p.line([(0.0, Y_SH - 0.005), (-0.01, 0.43)], fill=_shade(bag_c, 0.85), width=0.011)
            p.rrect(-0.05, 0.42, 0.04, 0.5, 0.012, fill=bag_c, outline=_shade(bag_c, 0.55))
        else:
            s = bside if view == "front" else -bside
            p.line([(-s * (sw - 0.03), Y_SH - 0.01), (s * (hw + 0.01), 0.44)], fill=_shade(bag_c, 0.85), width=0.011)
            p.rrect(s * (hw + 0.012) - 0.042, 0.42, s * (hw + 0.012) + 0.042, 0.50, 0.012,
                    fill=bag_c, outline=_shade(bag_c, 0.55))
            p.line([(s * (hw + 0.012) - 0.042, 0.445), (s * (hw + 0.012) + 0.042, 0.445)],
                   fill=_shade(bag_c, 0.7), width=0.004)
    elif bag == "handbag":
        hx, hy = hands[-1] if side else hands[0 if (bside < 0) == (view == "front") else 1]
        p.line([(hx - 0.022, hy + 0.03), (hx, hy - 0.005), (hx + 0.022, hy + 0.03)],
               fill=_shade(bag_c, 0.7), width=0.007)
        p.rrect(hx - 0.037, hy + 0.025, hx + 0.037, hy + 0.09, 0.012, fill=bag_c, outline=_shade(bag_c, 0.55))

    _draw_head(p, a, view, skin, hair, sh, long_hair, dark)


def _details(p: _Painter, a: dict[str, Any], view: str, top_c: tuple, hem: float, sh: dict[str, float]) -> None:
    """Collars, buttons, zips, pockets, hems: what tells a shirt from a jacket or a sweater."""
    t = a["top_type"]
    dark, light = _shade(top_c, 0.62), _shade(top_c, 1.3)
    if view == "front":
        if a["inner_colour"]:
            inner = _shade(COLOURS[a["inner_colour"]], sh["inner"])
            p.poly([(-0.026, Y_SH - 0.02), (0.026, Y_SH - 0.02), (0.022, hem - 0.005), (-0.022, hem - 0.005)],
                   fill=inner, outline=dark)
        elif t in _OPEN_TOPS:
            p.line([(0.0, Y_SH - 0.015), (0.0, hem - 0.005)], fill=dark, width=0.005)
        if t == "shirt":
            for sx in (-1, 1):
                collar = [(sx * 0.03, Y_SH - 0.024), (sx * 0.004, Y_SH + 0.012), (sx * 0.034, Y_SH + 0.01)]
                p.poly(collar, fill=light, outline=dark)
            for i in range(4):
                p.ellipse(0.0, Y_SH + 0.04 + i * 0.075, 0.005, 0.005, fill=dark)
        elif t in _OPEN_TOPS:
            for sx in (-1, 1):
                p.poly([(sx * 0.028, Y_SH - 0.022), (sx * 0.06, Y_SH + 0.0), (sx * 0.03, Y_SH + 0.07)], fill=dark)
            if t == "coat":
                p.line([(-0.08, 0.40), (0.08, 0.40)], fill=dark, width=0.008)
        elif t == "hoodie":
            p.ellipse(0.0, Y_SH - 0.004, 0.045, 0.022, fill=_shade(top_c, 0.8))
            for sx in (-1, 1):
                p.line([(sx * 0.014, Y_SH + 0.005), (sx * 0.016, Y_SH + 0.07)], fill=(235, 235, 235), width=0.004)
            p.rrect(-0.055, 0.41, 0.055, 0.49, 0.01, fill=None, outline=dark, width=0.004)
        elif t == "blouse":
            p.poly([(-0.026, Y_SH - 0.022), (0.026, Y_SH - 0.022), (0.0, Y_SH + 0.03)], fill=None, outline=dark)
        elif t != "dress" or a["sleeves"] != "sleeveless":  # t-shirt, sweater, dress: a round neckline
            p.line([(-0.026, Y_SH - 0.02), (0.0, Y_SH - 0.006), (0.026, Y_SH - 0.02)], fill=dark, width=0.005)
    elif view == "back" and t in ("shirt", "jacket", "coat"):
        p.line([(-0.07, Y_SH + 0.05), (0.07, Y_SH + 0.05)], fill=dark, width=0.004)  # yoke seam
    if t == "sweater" or t == "hoodie":
        half = 0.075 if view != "side" else 0.055
        p.poly([(-half, hem - 0.03), (half, hem - 0.03), (half, hem), (-half, hem)], fill=_shade(top_c, 0.78))
    if t == "dress":
        half = 0.072 if view != "side" else 0.056
        p.line([(-half, 0.42), (half, 0.42)], fill=dark, width=0.006)


def _draw_head(p: _Painter, a: dict[str, Any], view: str, skin: tuple, hair: tuple, sh: dict[str, float],
               long_hair: bool, dark: tuple) -> None:
    hat = a["hat_type"]
    hat_c = _shade(COLOURS[a["hat_colour"]], sh["hat"]) if hat else skin
    if view == "front":
        p.ellipse(0.0, 0.068, 0.048, 0.06, fill=skin)
        p.chord(0.0, 0.064, 0.053, 0.066, 160, 20, fill=hair)
        p.ellipse(0.0, 0.08, 0.043, 0.048, fill=skin)
        if long_hair:
            for sx in (-1, 1):
                p.poly([(sx * 0.04, 0.045), (sx * 0.066, 0.05), (sx * 0.072, 0.25), (sx * 0.044, 0.25)], fill=hair)
        for sx in (-1, 1):
            p.ellipse(sx * 0.018, 0.076, 0.0055, 0.0055, fill=dark)
        p.line([(-0.011, 0.103), (0.011, 0.103)], fill=_shade(skin, 0.6), width=0.004)
        if a["glasses"]:
            for sx in (-1, 1):
                p.ellipse(sx * 0.019, 0.076, 0.014, 0.011, fill=None, outline=dark, width=0.004)
            p.line([(-0.006, 0.075), (0.006, 0.075)], fill=dark, width=0.004)
    elif view == "back":
        p.ellipse(-0.05, 0.078, 0.008, 0.013, fill=skin)
        p.ellipse(0.05, 0.078, 0.008, 0.013, fill=skin)
        p.ellipse(0.0, 0.066, 0.051, 0.063, fill=hair)
        if long_hair:
            p.rrect(-0.064, 0.05, 0.064, 0.29, 0.03, fill=hair)
    else:
        p.ellipse(0.005, 0.068, 0.048, 0.06, fill=skin)
        p.poly([(0.046, 0.058), (0.062, 0.086), (0.045, 0.09)], fill=skin)
        p.chord(-0.004, 0.064, 0.053, 0.066, 110, 335, fill=hair)
        if long_hair:
            p.rrect(-0.058, 0.05, -0.014, 0.27, 0.02, fill=hair)
        else:
            p.ellipse(0.0, 0.078, 0.009, 0.013, fill=_shade(skin, 0.92))
        p.ellipse(0.03, 0.072, 0.005, 0.005, fill=dark)
        p.line([(0.03, 0.102), (0.043, 0.101)], fill=_shade(skin, 0.6), width=0.004)
        if a["glasses"]:
            p.ellipse(0.031, 0.072, 0.013, 0.011, fill=None, outline=dark, width=0.004)
            p.line([(0.018, 0.07), (-0.004, 0.07)], fill=dark, width=0.004)
    if hat is None:
        return
    band = _shade(hat_c, 0.7)
    if hat == "cap":
        p.chord(0.0 if not view == "side" else -0.002, 0.046, 0.055, 0.048, 180, 360, fill=hat_c)
        if view == "front":
            p.ellipse(0.0, 0.046, 0.058, 0.012, fill=band)
        elif view == "side":
            p.poly([(0.03, 0.038), (0.1, 0.044), (0.098, 0.052), (0.03, 0.05)], fill=band)
        else:
            p.line([(-0.02, 0.04), (0.02, 0.04)], fill=band, width=0.006)
    elif hat == "beanie":
        p.chord(0.0, 0.052, 0.056, 0.06, 165, 15, fill=hat_c)
        p.rrect(-0.056, 0.036, 0.056, 0.056, 0.006, fill=band)
    else:  # wide-brimmed hat
        p.chord(0.0, 0.04, 0.052, 0.048, 180, 360, fill=hat_c)
        p.rrect(-0.052, 0.026, 0.052, 0.036, 0.004, fill=band)
        p.ellipse(0.0, 0.04, 0.1, 0.016 if view != "side" else 0.011, fill=hat_c, outline=band, width=0.003)


def _photometric(img: Image.Image, rng: np.random.Generator, cam: int) -> Image.Image:
    """Lighting (brightness, contrast, a camera tint), sometimes blur, and sensor noise."""
    arr = np.asarray(img, dtype=np.float32)
    mean = arr.mean()
    arr = (arr - mean) * float(rng.uniform(0.75, 1.2)) + mean
    tint = np.array((1.0, 1.0, 1.03) if cam == 0 else (1.05, 1.0, 0.93), dtype=np.float32)
    arr = arr * float(rng.uniform(0.72, 1.25)) * tint * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.35:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9))))
    sigma = float(rng.uniform(0.0, 7.0))
    noise = rng.standard_normal((out.height, out.width, 3), dtype=np.float32) * sigma
    noisy = np.asarray(out, dtype=np.float32) + noise
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def view_of(person: dict[str, Any], image_index: int) -> str:
    """The view of a person's image: the views rotate from a per-person offset."""
    return VIEWS[(person["render"]["view_offset"] + image_index) % len(VIEWS)]


def render_image(person: dict[str, Any], view: str, *, seed: int, image_index: int = 0,
                 image_size: tuple[int, int] = (192, 64)) -> Image.Image:
    """Draw one RGB image (height, width = ``image_size``) of ``person`` seen from ``view``."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
    h, w = image_size
    rng = np.random.default_rng([seed, person["id"], image_index, 1])
    hc, wc = h * _SUPERSAMPLE, w * _SUPERSAMPLE
    cam = image_index % 2
    ph = hc * float(rng.uniform(0.78, 0.92)) * person["render"]["height"]
    feet = hc * float(rng.uniform(0.955, 0.99))
    cx = wc / 2 + wc * float(rng.uniform(-0.08, 0.08))
    facing = int(_pick(rng, (-1, 1))) if view == "side" else 1
    horizon = int(feet - ph * float(rng.uniform(0.08, 0.5)))
    canvas, floor = _background(rng, wc, hc, cam, horizon)
    ImageDraw.Draw(canvas).ellipse([cx - 0.11 * ph, feet - 0.012 * ph, cx + 0.11 * ph, feet + 0.016 * ph],
                                   fill=_shade(floor, 0.72))
    _draw_person(canvas, person, view, rng, (cx, feet - ph, ph, facing))
    return _photometric(canvas.reduce(_SUPERSAMPLE), rng, cam)


# ----------------------------------------------------------------------------- captions
_TOP_WORDS = {"t-shirt": ("t-shirt", "T-shirt", "tee shirt", "tshirt", "tee"),
              "shirt": ("shirt", "button-up shirt", "button down shirt", "collared shirt"),
              "blouse": ("blouse", "top"), "jacket": ("jacket", "zip-up jacket"),
              "coat": ("coat", "long coat", "overcoat"), "hoodie": ("hoodie", "hooded sweatshirt", "hooded top"),
              "sweater": ("sweater", "jumper", "pullover"), "dress": ("dress",)}
_BOTTOM_WORDS = {"trousers": ("trousers", "pants", "slacks"), "jeans": ("jeans", "denim jeans", "denim pants"),
                 "shorts": ("shorts", "short pants"), "skirt": ("skirt", "knee length skirt", "short skirt")}
_SHOE_WORDS = {"sneakers": ("sneakers", "trainers", "tennis shoes", "running shoes"),
               "boots": ("boots", "ankle boots"), "shoes": ("shoes", "leather shoes", "dress shoes", "flat shoes")}
_HAT_WORDS = {"cap": ("cap", "baseball cap", "ball cap"), "beanie": ("beanie", "knit hat", "wool hat"),
              "hat": ("hat", "sun hat", "wide brimmed hat")}
_BAG_WORDS = {"backpack": ("backpack", "rucksack", "school bag"), "handbag": ("handbag", "purse", "hand bag"),
              "shoulder bag": ("shoulder bag", "messenger bag", "crossbody bag", "side bag")}
_SLEEVE_WORDS = {"short": ("short-sleeved", "short sleeve", "short sleeved"), "long": ("long-sleeved", "long sleeve"),
                 "sleeveless": ("sleeveless",)}
_SUBJECTS = {"man": ("A man", "The man", "This man", "A young man", "The guy", "A male", "This guy", "A boy"),
             "woman": ("A woman", "The woman", "This woman", "A young woman", "The lady", "A girl", "The girl",
                       "A female", "This lady")}
_NEUTRAL_SUBJECTS = ("A person", "The pedestrian", "This person")
_GLASSES_WORDS = ("glasses", "eyeglasses", "a pair of glasses", "spectacles")
_MODIFIABLE = {"blue", "green", "grey", "brown", "pink", "purple"}
_WORD_RE = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _article(np_text: str) -> str:
    return ("an " if np_text[:1].lower() in "aeiou" else "a ") + np_text


def _join(items: Sequence[str], rng: np.random.Generator) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    comma = ", and " if rng.random() < 0.3 else " and "
    return ", ".join(items[:-1]) + comma + items[-1]


class _Phrases:
    """Noun phrases and predicates for one caption, drawn with the caption's RNG."""

    def __init__(self, person: dict[str, Any], view: str, rng: np.random.Generator):
        self.a, self.sh, self.view, self.rng = person["attributes"], person["render"]["shade"], view, rng
        man = self.a["gender"] == "man"
        self.he, self.his = ("he", "his") if man else ("she", "her")

    def chance(self, q: float) -> bool:
        return bool(self.rng.random() < q)

    def colour(self, name: str, shade: float) -> str:
        word = "gray" if name == "grey" and self.chance(0.3) else name
        if name in _MODIFIABLE and shade < 0.88 and self.chance(0.6):
            return "dark " + word
        if name in _MODIFIABLE and shade > 1.09 and self.chance(0.6):
            return "light " + word
        return word

    def top(self) -> str:
        a, rng = self.a, self.rng
        t = a["top_type"]
        noun = _pick(rng, _TOP_WORDS[t])
        c = self.colour(a["top_colour"], self.sh["top"])
        plain_c = c
        if (t in ("shirt", "blouse", "dress") and self.chance(0.5)) or (t == "t-shirt" and self.chance(0.12)):
            sl = _pick(rng, _SLEEVE_WORDS[a["sleeves"]])
            c = f"{sl} {c}" if self.chance(0.6) else f"{c} {sl}"
        pat = a["top_pattern"]
        pc = self.colour(a["pattern_colour"], self.sh["pattern"]) if a["pattern_colour"] else ""
        if pat == "stripes":
            np_text = _pick(rng, (f"{c} and {pc} striped {noun}", f"{c} {noun} with {pc} stripes",
                                  f"striped {c} and {pc} {noun}"))
        elif pat == "checks":
            np_text = _pick(rng, (f"{c} and {pc} plaid {noun}", f"{c} and {pc} checkered {noun}",
                                  f"{c} {noun} with a {pc} check pattern", f"checked {c} and {pc} {noun}"))
        elif pat == "logo" and self.view != "back":
            np_text = _pick(rng, (f"{c} {noun} with a {pc} logo on the front", f"{c} {noun} with a {pc} graphic on it",
                                  f"{c} {noun} that has a {pc} print on the chest"))
        else:
            np_text = f"{c} colored {noun}" if c == plain_c and self.chance(0.06) else f"{c} {noun}"
        np_text = _article(np_text)
        if a["inner_colour"] and self.view == "front" and self.chance(0.85):
            ic = self.colour(a["inner_colour"], self.sh["inner"])
            np_text += _pick(rng, (f" over {_article(ic)} {_pick(rng, ('shirt', 'top', 't-shirt'))}",
                                   f" with {_article(ic)} shirt underneath", f" on top of {_article(ic)} shirt"))
        return np_text

    def bottom(self) -> str:
        a, rng = self.a, self.rng
        noun = _pick(rng, _BOTTOM_WORDS[a["bottom_type"]])
        c = self.colour(a["bottom_colour"], self.sh["bottom"])
        if a["bottom_type"] == "skirt":
            return _article(f"{c} {noun}")
        return _pick(rng, (f"{c} {noun}", f"a pair of {c} {noun}", f"{c} {noun}"))

    def shoes(self) -> str:
        noun = _pick(self.rng, _SHOE_WORDS[self.a["shoes_type"]])
        c = self.colour(self.a["shoes_colour"], self.sh["shoes"])
        return f"a pair of {c} {noun}" if self.chance(0.3) else f"{c} {noun}"

    def hat(self) -> str:
        noun = _pick(self.rng, _HAT_WORDS[self.a["hat_type"]])
        return _article(f"{self.colour(self.a['hat_colour'], self.sh['hat'])} {noun}")

    def bag(self) -> str:
        noun = _pick(self.rng, _BAG_WORDS[self.a["bag_type"]])
        c = self.colour(self.a["bag_colour"], self.sh["bag"])
        return _article(f"{c} {noun}")

    def bag_place(self) -> str:
        return {"backpack": f" on {self.his} back", "handbag": f" in {self.his} hand",
                "shoulder bag": _pick(self.rng, (f" over {self.his} shoulder", f" on {self.his} shoulder",
                                                 " across the body"))}[self.a["bag_type"]]

    def hair(self) -> str:
        length = _pick(self.rng, ("long", "shoulder length", "long")) if self.a["hair_length"] == "long" \
            else _pick(self.rng, ("short", "short", "cropped"))
        c = self.colour(self.a["hair_colour"], 1.0)
        if c == "blonde" and self.chance(0.3):
            c = "blond"
        return f"{length} {c} hair" if self.chance(0.75) else f"{c} {length} hair"

    def predicate(self, item: str) -> str:
        """A verb phrase about one item, for '<He/She> ...' sentences."""
        rng = self.rng
        if item == "bag":
            verb = _pick(rng, ("is carrying", "carries", "has", "is holding") if self.a["bag_type"] == "handbag"
                         else ("is carrying", "carries", "has"))
            return f"{verb} {self.bag()}" + (self.bag_place() if self.chance(0.5) else "")
        if item == "hat":
            return _pick(rng, (f"is wearing {self.hat()}", f"has {self.hat()} on {self.his} head",
                               f"wears {self.hat()}"))
        if item == "glasses":
            return _pick(rng, ("wears glasses", "has glasses on", f"is wearing {_pick(rng, _GLASSES_WORDS)}"))
        if item == "shoes":
            return _pick(rng, (f"has {self.shoes()} on", f"is wearing {self.shoes()}", f"wears {self.shoes()}"))
        if item == "hair":
            return _pick(rng, (f"has {self.hair()}", f"has got {self.hair()}"))
        if item == "top":
            return _pick(rng, (f"is wearing {self.top()}", f"wears {self.top()}", f"has on {self.top()}"))
        if item == "bottom":
            return _pick(rng, (f"is wearing {self.bottom()}", f"has on {self.bottom()}", f"wears {self.bottom()}"))
        raise KeyError(item)

    def sentence(self, items: Sequence[str]) -> str:
        """One sentence about one or two items, with the pronoun or a possessive as subject."""
        if len(items) == 1 and items[0] == "hair" and self.chance(0.4):
            length = "long" if self.a["hair_length"] == "long" else "short"
            return f"{self.his.capitalize()} hair is {length} and {self.colour(self.a['hair_colour'], 1.0)}."
        if len(items) == 1 and items[0] == "shoes" and self.chance(0.3):
            return f"{self.his.capitalize()} shoes are {self.colour(self.a['shoes_colour'], self.sh['shoes'])}."
        if len(items) == 1 and items[0] == "bag" and self.a["bag_type"] == "backpack" and self.chance(0.3):
            return f"{self.bag().capitalize()} is on {self.his} back."
        preds = [self.predicate(i) for i in items]
        if self.chance(0.15):
            preds[0] = "is also " + preds[0][3:] if preds[0].startswith("is ") else "also " + preds[0]
        return f"{self.he.capitalize()} " + " and ".join(preds) + "."


def _caption(person: dict[str, Any], view: str, rng: np.random.Generator) -> str:
    a = person["attributes"]
    ph = _Phrases(person, view, rng)
    clothes = ["top"] + (["bottom"] if a["bottom_type"] else [])
    extras = []
    if not ph.chance(0.15):
        extras.append("hair")
    if not ph.chance(0.15):
        extras.append("shoes")
    if a["hat_type"]:
        extras.append("hat")
    if a["bag_type"] and not (a["bag_type"] == "backpack" and view == "front" and ph.chance(0.4)):
        extras.append("bag")
    if a["glasses"] and view != "back" and not ph.chance(0.25):
        extras.append("glasses")
    rng.shuffle(extras)
    gender_word = _pick(rng, ("man", "guy", "male") if a["gender"] == "man" else ("woman", "lady", "girl", "female"))
    subject = _pick(rng, _SUBJECTS[a["gender"]])
    neutral = ph.chance(0.1)
    style = _weighted(rng, ("wear", "in", "sentences", "participle", "this_is"), (0.35, 0.15, 0.2, 0.15, 0.15))

    # clothing list of the opening sentence; shoes and the hat sometimes join it
    listed = list(clothes)
    if rng.random() < 0.2:
        listed.reverse()
    for item in ("shoes", "hat"):
        if item in extras and style != "sentences" and ph.chance(0.5):
            extras.remove(item)
            listed.append(item)
    phrase = {"top": ph.top, "bottom": ph.bottom, "shoes": ph.shoes, "hat": ph.hat}
    nps = [phrase[i]() for i in listed]
    if len(nps) == 2 and listed[0] == "top" and ph.chance(0.35):
        layered = a["top_type"] in ("jacket", "coat", "hoodie", "sweater")
        outfit = f"{nps[0]} {_pick(rng, ('over', 'with', 'and') if layered else ('with', 'and'))} {nps[1]}"
    else:
        outfit = _join(nps, rng)

    with_hair = ""
    if "hair" in extras and style in ("wear", "participle", "this_is") and ph.chance(0.5):
        extras.remove("hair")
        with_hair = f" with {ph.hair()}"
    trail = ""
    if "bag" in extras and style in ("wear", "in", "participle") and ph.chance(0.35):
        extras.remove("bag")
        trail = f", with {ph.bag()}{ph.bag_place()}" if ph.chance(0.6) else f" and carrying {ph.bag()}"
    if neutral and (not extras or style == "this_is"):
        neutral = False
    subj = _pick(rng, _NEUTRAL_SUBJECTS) if neutral else subject

    sentences: list[str] = []
    if style == "wear":
        verb = _pick(rng, ("is wearing", "wears", "is dressed in", "has on", "is in"))
        sentences.append(f"{subj}{with_hair} {verb} {outfit}{trail}.")
    elif style == "in":
        sentences.append(f"{subj} in {outfit}{trail}.")
    elif style == "participle":
        sentences.append(f"{subj}{with_hair} {_pick(rng, ('wearing', 'dressed in'))} {outfit}{trail}.")
    elif style == "this_is":
        rel = _pick(rng, ("who is wearing", "wearing", "in", "dressed in"))
        opening = _pick(rng, ("This is", "The person is", "It is"))
        sentences.append(f"{opening} {_article(gender_word)}{with_hair} {rel} {outfit}{trail}.")
    else:  # one item after the other
        first = extras.pop(0) if extras and extras[0] == "hair" else None
        sentences.append(f"{subj} {ph.predicate(first)}." if first else f"{subj} {ph.predicate('top')}.")
        rest = ([] if first is None else ["top"]) + [i for i in listed if i != "top"]
        while rest:
            take = rest[:2] if ph.chance(0.5) else rest[:1]
            rest = rest[len(take):]
            sentences.append(ph.sentence(take))
    while extras:
        take = extras[:2] if ph.chance(0.45) else extras[:1]
        extras = extras[len(take):]
        sentences.append(ph.sentence(take))
    if view == "back" and ph.chance(0.12):
        sentences.append(f"{ph.he.capitalize()} is walking away from the camera.")
    elif view == "side" and ph.chance(0.12):
        sentences.append(f"{ph.he.capitalize()} is walking.")
    text = " ".join(sentences)
    text = text[0].upper() + text[1:]
    if ph.chance(0.07):
        text = text.lower()
    if ph.chance(0.05):
        text = text.rstrip(".")
    return text


def make_captions(person: dict[str, Any], view: str, *, seed: int, image_index: int = 0, n: int = 2) -> list[str]:
    """``n`` distinct captions of one image of ``person`` (they may mention only what ``view`` shows)."""
    rng = np.random.default_rng([seed, person["id"], image_index, 2])
    captions: list[str] = []
    for _ in range(20 * n):
        c = _caption(person, view, rng)
        if c not in captions:
            captions.append(c)
        if len(captions) == n:
            return captions
    while len(captions) < n:  # a tiny attribute set may leave too few wordings; repeats are harmless
        captions.append(captions[-1])
    return captions


# ----------------------------------------------------------------------------- vocabulary and word vectors
def _category_words() -> dict[str, str]:
    """Word -> semantic group, taken from the phrase tables above (first group wins)."""
    groups: list[tuple[str, set[str]]] = [
        ("colour", set(COLOURS) | set(HAIR_COLOURS) | {"gray", "blond", "dark", "light", "colored"}),
        ("person", {w for s in (*_SUBJECTS.values(), _NEUTRAL_SUBJECTS) for x in s for w in _words(x)}
         | {"he", "she", "his", "her", "guy", "lady", "female", "male", "man", "woman", "girl", "boy"}),
        ("pattern", {"striped", "stripes", "plaid", "checkered", "checked", "check", "pattern", "logo", "graphic",
                     "print", "design"}),
        ("footwear", {w for v in _SHOE_WORDS.values() for x in v for w in _words(x)}),
        ("accessory", {w for d in (_HAT_WORDS, _BAG_WORDS) for v in d.values() for x in v for w in _words(x)}
         | {w for x in _GLASSES_WORDS for w in _words(x)}),
        ("clothing", {w for d in (_TOP_WORDS, _BOTTOM_WORDS, _SLEEVE_WORDS) for v in d.values() for x in v
                      for w in _words(x)}),
        ("hair", {"hair", "long", "short", "cropped", "shoulder", "length"}),
    ]
    out: dict[str, str] = {}
    for name, words in groups:
        for w in words:
            out.setdefault(w, name)
    out.pop("a", None)  # articles stay function words
    out.pop("of", None)
    return out


def _unit(seed_text: str) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(seed_text.encode("utf-8"))).standard_normal(EMBED_DIM)
    return v / np.linalg.norm(v)


def word_vectors(words: Sequence[str]) -> np.ndarray:
    """Deterministic pseudo word embeddings, float32 [len(words), 512], unit rows.

    The real ``clip_vocab_vit.npy`` holds CLIP text-encoder outputs; here each row is
    ``normalise(0.6 * group_vector + 0.8 * own_vector)`` where the group is one of colour, person,
    pattern, footwear, accessory, clothing, hair (other words: ``0.3 * function_vector``), and every
    vector comes from a generator seeded by the CRC32 of its name. So words of one group have cosine
    about 0.36, a word's vector never depends on the vocabulary or the seed.
    """
    cats = _category_words()
    rows = []
    for w in words:
        cat = cats.get(w)
        v = (0.6 * _unit("group:" + cat) if cat else 0.3 * _unit("group:function")) + 0.8 * _unit("word:" + w)
        rows.append(v / np.linalg.norm(v))
    return np.asarray(rows, dtype=np.float32).reshape(len(words), EMBED_DIM)


def build_vocabulary(captions: Sequence[str]) -> list[str]:
    """Words of the captions, most frequent first (ties alphabetical); word id = position."""
    counts = Counter(w for c in captions for w in _words(c))
    return sorted(counts, key=lambda w: (-counts[w], w))


# ----------------------------------------------------------------------------- files
def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename, so a killed run never leaves a truncated file."""
    atomic_write_bytes(path, data, durable=False)


def _write_json(path: Path, obj: Any, indent: int | None = None) -> None:
    _atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8"))


_OUR_NAMES = ("annotations", "imgs", "reid_raw.json", "clip_vocab_vit.npy", "preview.jpg")


def _check_out_dir(out: Path) -> None:
    """Refuse to write over a dataset that this generator did not make (e.g. a real CUHK-PEDES copy)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir {out} exists and is not a folder")
    found = [n for n in _OUR_NAMES if (out / n).exists()]
    if not found:
        return
    marker = out / "attributes.json"
    try:
        ours = json.loads(marker.read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{out} already holds {', '.join(found)} but no attributes.json written by {GENERATOR}; "
            "it looks like a dataset this generator did not make. Pass an empty or new folder, "
            "or delete that folder yourself if it is disposable."
        )


def _render_task(task: tuple[int, dict[str, Any], int, tuple[int, int], str, int]) -> list[dict[str, Any]]:
    """Worker: draw, save and caption every image of one person."""
    seed, person, images_per_id, image_size, img_root, width = task
    out = []
    for k in range(images_per_id):
        view = view_of(person, k)
        rel = f"{IMAGE_FOLDER}/cam_{'ab'[k % 2]}/p{person['id']:0{width}d}_{k:02d}.jpg"
        img = render_image(person, view, seed=seed, image_index=k, image_size=image_size)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        _atomic_write(Path(img_root) / rel, buf.getvalue())
        out.append({"image_index": k, "file_path": rel, "view": view,
                    "captions": make_captions(person, view, seed=seed, image_index=k)})
    return out


def _make_preview(out: Path, persons: list[dict[str, Any]], records: list[dict[str, Any]],
                  images_per_id: int, image_size: tuple[int, int]) -> None:
    """Contact sheet: up to 8 persons (sibling pairs first) x their first 6 images."""
    by_id = {p["id"]: p for p in persons}
    chosen: list[int] = []
    for p in persons:
        if p["split"] == "train" and p["sibling_of"] is not None and len(chosen) < 6:
            for pid in (p["sibling_of"], p["id"]):
                if pid not in chosen:
                    chosen.append(pid)
    for p in persons:
        if len(chosen) >= 8:
            break
        if p["id"] not in chosen:
            chosen.append(p["id"])
    chosen = chosen[:8]
    h, w = image_size
    cols = min(images_per_id, 6)
    label_w, gap = 44, 2
    sheet = Image.new("RGB", (label_w + cols * (w + gap), len(chosen) * (h + gap)), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    paths = {(r["id"], r["image_index"]): r["file_path"] for r in records}
    for row, pid in enumerate(chosen):
        y = row * (h + gap)
        d.text((3, y + 3), f"id {pid}", fill=(0, 0, 0), font=font)
        sib = by_id[pid]["sibling_of"]
        if sib is not None:
            d.text((3, y + 16), f"~{sib}", fill=(160, 0, 0), font=font)
        for k in range(cols):
            with Image.open(out / "imgs" / paths[(pid, k)]) as im:
                sheet.paste(im.convert("RGB"), (label_w + k * (w + gap), y))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=JPEG_QUALITY)
    _atomic_write(out / "preview.jpg", buf.getvalue())


def generate(out_dir: str | Path, num_ids: int = 1000, seed: int = 0, *, images_per_id: int = 4,
             image_size: tuple[int, int] = (192, 64), val_fraction: float = 0.1, test_fraction: float = 0.1,
             workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Write a synthetic pedestrian dataset to ``out_dir`` (both layouts); return a summary dict."""
    t_start = time.perf_counter()
    sizes = _split_sizes(num_ids, val_fraction, test_fraction)
    if images_per_id < 1:
        raise ValueError(f"images_per_id must be at least 1, got {images_per_id}")
    h, w = (int(v) for v in image_size)
    if h < 32 or w < 12:
        raise ValueError(f"image_size is (height, width) and must be at least (32, 12), got {tuple(image_size)}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)

    persons = _make_persons(seed, sizes)
    # An interrupted re-run must not leave the previous, complete-looking annotations in place.
    for stale in [out / "annotations" / f"{s}.json" for s in SPLITS] + [out / "reid_raw.json"]:
        stale.unlink(missing_ok=True)
    _write_json(out / "attributes.json", {
        "generator": GENERATOR, "format": FORMAT_VERSION, "seed": seed, "num_ids": num_ids,
        "images_per_id": images_per_id, "image_size": [h, w], "attribute_keys": list(ATTRIBUTE_KEYS),
        "persons": persons}, indent=1)

    width = max(5, len(str(num_ids - 1)))
    tasks = [(seed, p, images_per_id, (h, w), str(out / "imgs"), width) for p in persons]
    results: list[list[dict[str, Any]]] = []
    n_workers = min(workers, len(tasks))
    total = len(tasks) * images_per_id
    if n_workers <= 1:
        with tqdm(total=total, disable=not progress, desc="synth", unit="img") as bar:
            for t in tasks:
                results.append(_render_task(t))
                bar.update(images_per_id)
    else:
        # fork where it exists: workers then need not re-import textreid.data (which pulls in torch);
        # they only use numpy and PIL. The pool starts before tqdm's monitor thread exists.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(n_workers) as pool, tqdm(total=total, disable=not progress, desc="synth", unit="img") as bar:
            chunk = max(1, len(tasks) // (n_workers * 16))
            for res in pool.imap(_render_task, tasks, chunksize=chunk):
                results.append(res)
                bar.update(images_per_id)

    records: list[dict[str, Any]] = []
    for p, res in zip(persons, results, strict=True):
        for r in res:
            records.append({"image_id": p["id"] * images_per_id + r["image_index"], "id": p["id"],
                            "split": p["split"], **r})
    expected = {r["file_path"] for r in records}
    for cam_dir in (out / "imgs" / IMAGE_FOLDER).glob("cam_*"):
        for f in cam_dir.iterdir():  # images of a previous, larger run, and temp files of a killed one
            rel = f"{IMAGE_FOLDER}/{cam_dir.name}/{f.name}"
            if rel not in expected and (re.fullmatch(r"p\d+_\d+\.jpg", f.name) or ".tmp" in f.name):
                f.unlink()

    vocab = build_vocabulary([c for r in records if r["split"] == "train" for c in r["captions"]])
    word_id = {wd: i for i, wd in enumerate(vocab)}
    buf = io.BytesIO()
    np.save(buf, word_vectors(vocab))
    _atomic_write(out / "clip_vocab_vit.npy", buf.getvalue())

    _write_json(out / "reid_raw.json", [
        {"split": r["split"], "id": r["id"], "file_path": r["file_path"], "captions": r["captions"],
         "processed_tokens": [_words(c) for c in r["captions"]]} for r in records])
    _make_preview(out, persons, records, images_per_id, (h, w))

    summary: dict[str, Any] = {"out_dir": str(out), "seed": seed, "num_ids": num_ids,
                               "images_per_id": images_per_id, "image_size": [h, w], "splits": {}}
    for split in SPLITS:  # annotations last: their presence means the dataset is complete
        entries = [{"image_id": r["image_id"], "id": r["id"], "file_path": r["file_path"], "sentence": c,
                    "onehot": [word_id[wd] for wd in _words(c) if wd in word_id]}
                   for r in records if r["split"] == split for c in r["captions"]]
        _write_json(out / "annotations" / f"{split}.json", {"annotations": entries})
        summary["splits"][split] = {"ids": sizes[split], "images": sizes[split] * images_per_id,
                                    "captions": len(entries)}
    summary["vocab_size"] = len(vocab)
    summary["siblings"] = sum(p["sibling_of"] is not None for p in persons)
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    return summary


__all__ = ["ATTRIBUTE_KEYS", "COLOURS", "VIEWS", "attribute_diff", "build_vocabulary", "generate",
           "make_captions", "render_image", "sample_person", "view_of", "word_vectors"]
