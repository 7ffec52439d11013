"""One synthetic image: a backdrop, the drawn person, then lighting, blur and sensor noise.

An image is a function of (seed, person id, image index) only. Camera a (even image index) is
cooler and mostly outdoors, camera b warmer and more often indoors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from textreid.data.synth.attributes import VIEWS, pick
from textreid.data.synth.figure import draw_person
from textreid.data.synth.painter import shade

SUPERSAMPLE = 2  # draw at 2x and reduce: cheap anti-aliasing
_WALLS_OUT = ((150, 155, 160), (175, 170, 160), (120, 130, 140), (160, 120, 100), (140, 150, 130),
              (200, 200, 195), (90, 95, 100))
_WALLS_IN = ((215, 205, 185), (230, 225, 215), (190, 175, 160), (170, 180, 190), (200, 190, 200),
             (140, 125, 110))
_FLOORS = ((110, 110, 112), (150, 145, 135), (90, 85, 80), (175, 165, 150), (125, 120, 105), (70, 75, 80))


def render_image(person: dict[str, Any], view: str, *, seed: int, image_index: int = 0,
                 image_size: tuple[int, int] = (192, 64)) -> Image.Image:
    """Draw one RGB image (height, width = ``image_size``) of ``person`` seen from ``view``."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid: {', '.join(VIEWS)}")
    h, w = image_size
    rng = np.random.default_rng([seed, person["id"], image_index, 1])
    hc, wc = h * SUPERSAMPLE, w * SUPERSAMPLE
    cam = image_index % 2
    ph = hc * float(rng.uniform(0.78, 0.92)) * person["render"]["height"]
    feet = hc * float(rng.uniform(0.955, 0.99))
    cx = wc / 2 + wc * float(rng.uniform(-0.08, 0.08))
    facing = int(pick(rng, (-1, 1))) if view == "side" else 1
    horizon = int(feet - ph * float(rng.uniform(0.08, 0.5)))
    canvas, floor = _background(rng, wc, hc, cam, horizon)
    ImageDraw.Draw(canvas).ellipse([cx - 0.11 * ph, feet - 0.012 * ph, cx + 0.11 * ph, feet + 0.016 * ph],
                                   fill=shade(floor, 0.72))  # the person's shadow
    draw_person(canvas, person, view, rng, (cx, feet - ph, ph, facing))
    return _photometric(canvas.reduce(SUPERSAMPLE), rng, cam)


def _background(rng: np.random.Generator, w: int, h: int, cam: int, horizon: int) -> tuple[Image.Image, tuple]:
    """A street/indoor backdrop with a ground line; returns it and the floor colour."""
    wall = np.array(pick(rng, _WALLS_OUT if rng.random() < (0.75 if cam == 0 else 0.3) else _WALLS_IN),
                    dtype=np.float32) + rng.uniform(-18, 18, 3).astype(np.float32)
    floor = np.array(pick(rng, _FLOORS), dtype=np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
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
    kind = pick(rng, ("plain", "bricks", "windows", "panels", "trees" if cam == 0 else "shelves"))
    _wall_decor(d, rng, kind, wall_t, (w, h), horizon)
    _ground(d, rng, tuple(int(c) for c in floor), (w, h), horizon)
    return img, tuple(int(c) for c in np.clip(floor, 0, 255))


def _wall_decor(d: ImageDraw.ImageDraw, rng: np.random.Generator, kind: str, wall: tuple,
                size: tuple[int, int], horizon: int) -> None:
    """Bricks, windows, panels, trees or shelves above the horizon ("plain": none); ``size`` = (w, h)."""
    w, h = size
    if kind == "bricks":
        mortar = shade(wall, 0.78)
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
            d.rectangle([x0, y0, x0 + ww, y0 + hh], fill=glass, outline=shade(wall, 0.6), width=3)
            d.line([(x0 + ww // 2, y0), (x0 + ww // 2, y0 + hh)], fill=shade(wall, 0.6), width=2)
    elif kind == "panels":
        pw = max(6, int(w * rng.uniform(0.12, 0.3)))
        for i, x in enumerate(range(int(rng.integers(pw)) - pw, w, pw)):
            if i % 2:
                d.rectangle([x, 0, x + pw, horizon], fill=shade(wall, 0.9))
    elif kind == "trees":
        for _ in range(int(rng.integers(2, 5))):
            x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(0.0, 0.45) * horizon
            r = rng.uniform(0.12, 0.3) * w
            leaf = tuple(int(c) for c in (rng.uniform(40, 90), rng.uniform(90, 140), rng.uniform(40, 80)))
            d.ellipse([x - r, y - r, x + r, y + r], fill=leaf)
    elif kind == "shelves":
        for y in np.linspace(0.1, 0.85, int(rng.integers(3, 6))) * horizon:
            d.rectangle([0, int(y), w, int(y) + 3], fill=shade(wall, 0.65))


def _ground(d: ImageDraw.ImageDraw, rng: np.random.Generator, floor: tuple, size: tuple[int, int],
            horizon: int) -> None:
    """A kerb line and, sometimes, floor tiles receding in perspective and a pole at one side."""
    w, h = size
    d.line([(0, horizon), (w, horizon)], fill=shade(floor, 0.7), width=2)
    if rng.random() < 0.5:
        step = 4.0
        y = float(horizon)
        while y < h:
            y += step
            step *= 1.35
            d.line([(0, int(y)), (w, int(y))], fill=shade(floor, 0.85), width=1)
    if rng.random() < 0.2:
        x = int(pick(rng, (rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0))) * w)
        pole = tuple(int(c) for c in rng.uniform(40, 120, 3))
        d.rectangle([x, 0, x + max(3, w // 20), horizon + int(0.05 * h)], fill=pole)


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
