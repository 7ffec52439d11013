"""The drawn person: pose, legs, arms, torso garment, bags and head, painted back to front.

``draw_person`` reads like the painting order: what hangs behind the body first (long hair, a
backpack seen from the front), then legs, lower garment, the far arm, torso, near arms, bags and
the head. Every part takes the ``Look`` (colours and measurements of one person in one view).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from textreid.data.synth.attributes import COLOURS, HAIR_COLOURS, OPEN_TOPS
from textreid.data.synth.painter import ARM_LEN, LEG_LEN, Y_HIP, Y_SH, Painter, shade

DARK = (30, 28, 28)  # eyes, glasses
_SLEEVE_END = {"long": 0.9, "short": 0.38, "sleeveless": 0.0}  # where the sleeve ends along the arm
_Pose = tuple[list[tuple[float, float, float]], list[tuple[float, float]]]


@dataclass(frozen=True)
class Look:
    """Colours and measurements of one person seen from one view, shared by every body part."""

    a: dict[str, Any]  # the person's attributes
    shades: dict[str, float]  # per-part shade factors of the render details
    view: str
    logo: str
    bag_side: int  # -1/1: which side a shoulder bag or handbag hangs on
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    top: tuple[int, int, int]
    pattern: tuple[int, int, int] | None
    bottom: tuple[int, int, int]  # skin when there is no bottom garment (then never drawn)
    shoes: tuple[int, int, int]
    bag: tuple[int, int, int]  # skin when there is no bag (then never drawn)
    shoulder: float  # half widths in person heights
    waist: float
    hip: float

    @property
    def side(self) -> bool:
        return self.view == "side"


def look_of(person: dict[str, Any], view: str) -> Look:
    """The ``Look`` of ``person`` in ``view``: attribute colours times the person's shade factors."""
    a, r = person["attributes"], person["render"]
    sh = r["shade"]
    skin = tuple(r["skin"])
    shoulder, waist, hip = (0.105, 0.085, 0.082) if a["gender"] == "man" else (0.09, 0.07, 0.088)
    return Look(
        a=a, shades=sh, view=view, logo=r["logo"], bag_side=r["bag_side"], skin=skin,
        hair=shade(HAIR_COLOURS[a["hair_colour"]], sh["hair"]),
        top=shade(COLOURS[a["top_colour"]], sh["top"]),
        pattern=shade(COLOURS[a["pattern_colour"]], sh["pattern"]) if a["pattern_colour"] else None,
        bottom=shade(COLOURS[a["bottom_colour"]], sh["bottom"]) if a["bottom_colour"] else skin,
        shoes=shade(COLOURS[a["shoes_colour"]], sh["shoes"]),
        bag=shade(COLOURS[a["bag_colour"]], sh["bag"]) if a["bag_type"] else skin,
        shoulder=shoulder, waist=waist, hip=hip,
    )


def draw_person(canvas: Image.Image, person: dict[str, Any], view: str, rng: np.random.Generator,
                placement: tuple[float, float, float, int]) -> None:
    """Paint ``person`` seen from ``view``; ``placement`` = (axis x, head top y, height in pixels, facing ±1)."""
    look = look_of(person, view)
    legs, arms = _pose(rng, look.side)
    cx, top, ph, facing = placement
    p = Painter(canvas, cx, top, ph, person["render"]["build"], facing)
    backpack = look.a["bag_type"] == "backpack"

    if look.a["hair_length"] == "long" and view == "front":  # visible beside the neck
        p.rrect(-0.064, 0.02, 0.064, 0.25, 0.03, fill=look.hair)
    if backpack and view == "front":  # peeking out behind the shoulders
        sw = look.shoulder
        p.rrect(-sw - 0.012, Y_SH - 0.015, sw + 0.012, 0.42, 0.03, fill=look.bag, outline=shade(look.bag, 0.6))
    for angle, hip_x, s in legs:
        _draw_leg(p, look, angle, hip_x, s)
    _draw_lower_garment(p, look)
    hands: list[tuple[float, float]] = []
    if look.side:  # the far arm and a backpack go behind the torso
        hands.append(_draw_arm(p, look, -0.005, *arms[0]))
        if backpack:
            p.rrect(-0.125, 0.19, -0.04, 0.43, 0.025, fill=look.bag, outline=shade(look.bag, 0.55))
            p.rrect(-0.13, 0.31, -0.09, 0.41, 0.015, fill=shade(look.bag, 0.85))
    _draw_torso(p, look)
    if look.side:
        hands.append(_draw_arm(p, look, -0.005, *arms[1]))
    else:
        hands.append(_draw_arm(p, look, -(look.shoulder - 0.018), *arms[0]))
        hands.append(_draw_arm(p, look, look.shoulder - 0.018, *arms[1]))
    _draw_bag(p, look, hands)
    _draw_head(p, look)


def _pose(rng: np.random.Generator, side: bool) -> _Pose:
    """Legs as (angle, hip x, shade) and arms as (angle, shade), in drawing order."""
    if side:
        stride = float(rng.uniform(4, 24))
        swing = stride * float(rng.uniform(0.6, 1.0))
        legs = [(-stride, 0.0, 0.85), (stride, 0.0, 1.0)]  # back leg first
        arms = [(swing, 0.82), (-swing, 1.0)]  # far arm first
        return legs, arms
    spread = float(rng.uniform(0.0, 5.0))
    legs = [(-spread - float(rng.uniform(0, 2)), -0.042, 1.0), (spread + float(rng.uniform(0, 2)), 0.042, 1.0)]
    arms = [(-float(rng.uniform(3, 12)), 1.0), (float(rng.uniform(3, 12)), 1.0)]
    return legs, arms


def _draw_leg(p: Painter, look: Look, angle: float, hip_x: float, s: float) -> None:
    """One leg from the hip (cloth, skin, boot shaft) and its shoe; ``s`` darkens the far leg."""
    a = look.a
    btype = a["bottom_type"]
    cloth_end = 1.0 if btype in ("trousers", "jeans") else 0.38 if btype == "shorts" else 0.0
    segs: list[tuple[float, float, Any]] = []
    if cloth_end > 0:
        segs.append((0.0, cloth_end, shade(look.bottom, s)))
    segs.append((cloth_end, 1.0, shade(look.skin, s)))
    if a["shoes_type"] == "boots":
        segs = [(t0, min(t1, 0.76), c) for t0, t1, c in segs] + [(0.76, 1.0, shade(look.shoes, s))]
    ex, ey = p.limb(hip_x, Y_HIP, angle, LEG_LEN, 0.078, 0.052, segs)
    if btype == "jeans":  # a light seam down the leg tells jeans from trousers
        p.line([(hip_x + (ex - hip_x) * 0.1, Y_HIP + 0.03), (ex, ey - 0.02)],
               fill=shade(look.bottom, 1.25 * s), width=0.006)
    fx = ex + (0.022 if look.side else 0.0)
    rx = 0.05 if look.side else 0.036
    p.ellipse(fx, ey + 0.013, rx, 0.02, fill=shade(look.shoes, s), outline=shade(look.shoes, 0.55), width=0.003)
    if a["shoes_type"] == "sneakers":
        sole = (245, 245, 245) if a["shoes_colour"] != "white" else (150, 150, 150)
        p.line([(fx - rx * 0.9, ey + 0.028), (fx + rx * 0.9, ey + 0.028)], fill=sole, width=0.008)
    elif a["shoes_type"] == "shoes":
        p.ellipse(fx + rx * 0.3, ey + 0.008, rx * 0.25, 0.005, fill=shade(look.shoes, 1.35 * s))


def _draw_lower_garment(p: Painter, look: Look) -> None:
    """The waistband of trousers/jeans/shorts (front and back) or a skirt, over the tops of the legs."""
    btype, hw, colour = look.a["bottom_type"], look.hip, look.bottom
    if btype in ("trousers", "jeans", "shorts") and not look.side:
        p.poly([(-hw + 0.005, 0.47), (hw - 0.005, 0.47), (hw - 0.01, 0.55), (-hw + 0.01, 0.55)], fill=colour)
    if btype == "skirt":
        pts = ([(-0.06, 0.47), (0.056, 0.47), (0.085, 0.68), (-0.085, 0.68)] if look.side
               else [(-hw - 0.004, 0.47), (hw + 0.004, 0.47), (hw + 0.042, 0.68), (-hw - 0.042, 0.68)])
        p.poly(pts, fill=colour, outline=shade(colour, 0.6))


def _draw_arm(p: Painter, look: Look, x0: float, angle: float, s: float) -> tuple[float, float]:
    """One arm from the shoulder at ``x0`` (sleeve, a sweater's cuff, skin, hand); returns the hand."""
    sleeve_t = _SLEEVE_END[look.a["sleeves"]]
    segs = [(0.0, sleeve_t, shade(look.top, s)), (sleeve_t, 1.0, shade(look.skin, s))]
    if look.a["top_type"] == "sweater":
        segs.insert(1, (sleeve_t - 0.06, sleeve_t, shade(look.top, 0.75 * s)))
    if sleeve_t > 0:
        p.ellipse(x0, Y_SH + 0.012, 0.026, 0.026, fill=shade(look.top, s))
    hx, hy = p.limb(x0, Y_SH + 0.012, angle, ARM_LEN, 0.052, 0.04, segs)
    p.ellipse(hx, hy, 0.022, 0.024, fill=shade(look.skin, s))
    return hx, hy


def _draw_torso(p: Painter, look: Look) -> None:
    """Neck, the hood of a hoodie, the patterned top garment and its details."""
    top_type, view, top_c = look.a["top_type"], look.view, look.top
    p.poly([(-0.02, 0.11), (0.02, 0.11), (0.022, Y_SH), (-0.022, Y_SH)], fill=look.skin)
    if top_type == "hoodie" and view != "front":
        hx0 = -0.035 if look.side else 0.0
        p.ellipse(hx0, Y_SH + (0.0 if look.side else 0.02), 0.032 if look.side else 0.05,
                  0.035 if look.side else 0.045, fill=shade(top_c, 0.8), outline=shade(top_c, 0.6), width=0.003)
    shapes, hem = _torso_shapes(look)
    y_end = 0.70 if top_type == "dress" else hem
    _garment(p, look, shapes, (Y_SH - 0.03, y_end))
    if top_type == "hoodie" and view == "back":  # the hood lies on the upper back, over the body
        p.ellipse(0.0, Y_SH + 0.03, 0.05, 0.045, fill=shade(top_c, 0.82), outline=shade(top_c, 0.6), width=0.003)
    _details(p, look, hem)


def _torso_shapes(look: Look) -> tuple[list[list[tuple[float, float]]], float]:
    """Polygons of the top garment (and the skirt of a dress); returns them and the hem height."""
    t = look.a["top_type"]
    sw, waist, hw = look.shoulder, look.waist, look.hip
    hem = {"coat": 0.76, "dress": 0.46}.get(t, 0.53)
    if look.side:
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


def _garment(p: Painter, look: Look, shapes: Sequence[Sequence[tuple[float, float]]],
             y_range: tuple[float, float]) -> None:
    """Fill ``shapes`` with the top's colour and its pattern (stripes, checks, a front logo)."""
    size = p.canvas.size
    mask = Image.new("L", size, 0)
    md = ImageDraw.Draw(mask)
    for s in shapes:
        p.poly(s, fill=255, draw=md)
    layer = Image.new("RGB", size, look.top)
    ld = ImageDraw.Draw(layer)
    pattern, pattern_colour = look.a["top_pattern"], look.pattern
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
    elif pattern == "logo" and pattern_colour is not None and look.view != "back":
        _logo(p, ld, look.logo, pattern_colour, 0.0 if look.view == "front" else 0.015)
    p.canvas.paste(layer, (0, 0), mask)
    for s in shapes:
        p.poly(s, fill=None, outline=shade(look.top, 0.6))


def _logo(p: Painter, draw: ImageDraw.ImageDraw, logo: str, colour: tuple, cx: float) -> None:
    """A chest logo (circle, square, star or bar) centred at ``cx``."""
    cy, r = Y_SH + 0.1, 0.03
    if logo == "circle":
        p.ellipse(cx, cy, r, r, fill=colour, draw=draw)
    elif logo == "square":
        p.poly([(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)], colour, draw=draw)
    elif logo == "star":
        pts = [(cx + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
                cy - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
        p.poly(pts, colour, draw=draw)
    else:
        p.poly([(cx - 1.4 * r, cy - 0.5 * r), (cx + 1.4 * r, cy - 0.5 * r), (cx + 1.4 * r, cy + 0.5 * r),
                (cx - 1.4 * r, cy + 0.5 * r)], colour, draw=draw)


def _details(p: Painter, look: Look, hem: float) -> None:
    """Collars, buttons, zips, pockets, hems: what tells a shirt from a jacket or a sweater."""
    a, view, top_c = look.a, look.view, look.top
    t = a["top_type"]
    dark, light = shade(top_c, 0.62), shade(top_c, 1.3)
    if view == "front":
        if a["inner_colour"]:
            inner = shade(COLOURS[a["inner_colour"]], look.shades["inner"])
            p.poly([(-0.026, Y_SH - 0.02), (0.026, Y_SH - 0.02), (0.022, hem - 0.005), (-0.022, hem - 0.005)],
                   fill=inner, outline=dark)
        elif t in OPEN_TOPS:
            p.line([(0.0, Y_SH - 0.015), (0.0, hem - 0.005)], fill=dark, width=0.005)
        if t == "shirt":
            for sx in (-1, 1):
                collar = [(sx * 0.03, Y_SH - 0.024), (sx * 0.004, Y_SH + 0.012), (sx * 0.034, Y_SH + 0.01)]
                p.poly(collar, fill=light, outline=dark)
            for i in range(4):
                p.ellipse(0.0, Y_SH + 0.04 + i * 0.075, 0.005, 0.005, fill=dark)
        elif t in OPEN_TOPS:
            for sx in (-1, 1):
                p.poly([(sx * 0.028, Y_SH - 0.022), (sx * 0.06, Y_SH + 0.0), (sx * 0.03, Y_SH + 0.07)], fill=dark)
            if t == "coat":
                p.line([(-0.08, 0.40), (0.08, 0.40)], fill=dark, width=0.008)
        elif t == "hoodie":
            p.ellipse(0.0, Y_SH - 0.004, 0.045, 0.022, fill=shade(top_c, 0.8))
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
        p.poly([(-half, hem - 0.03), (half, hem - 0.03), (half, hem), (-half, hem)], fill=shade(top_c, 0.78))
    if t == "dress":
        half = 0.072 if view != "side" else 0.056
        p.line([(-half, 0.42), (half, 0.42)], fill=dark, width=0.006)


def _draw_bag(p: Painter, look: Look, hands: Sequence[tuple[float, float]]) -> None:
    """The part of the bag in front of the body: a backpack's straps or body, a shoulder bag, a handbag."""
    bag, view, colour = look.a["bag_type"], look.view, look.bag
    sw, hw = look.shoulder, look.hip
    if bag == "backpack" and view == "back":
        p.rrect(-0.078, 0.2, 0.078, 0.43, 0.03, fill=colour, outline=shade(colour, 0.55), width=0.006)
        p.rrect(-0.055, 0.33, 0.055, 0.41, 0.02, fill=shade(colour, 0.85), outline=shade(colour, 0.55))
        p.line([(-0.02, 0.2), (-0.02, 0.185), (0.02, 0.185), (0.02, 0.2)], fill=shade(colour, 0.7), width=0.008)
    elif bag == "backpack" and view == "front":
        for sx in (-1, 1):
            p.line([(sx * (sw - 0.032), Y_SH - 0.01), (sx * (sw - 0.038), 0.37)], fill=colour, width=0.018)
    elif bag == "backpack":
        p.line([(0.0, Y_SH - 0.005), (0.03, 0.36)], fill=colour, width=0.014)
    elif bag == "shoulder bag" and look.side:
        p.line([(0.0, Y_SH - 0.005), (-0.01, 0.43)], fill=shade(colour, 0.85), width=0.011)
        p.rrect(-0.05, 0.42, 0.04, 0.5, 0.012, fill=colour, outline=shade(colour, 0.55))
    elif bag == "shoulder bag":
        s = look.bag_side if view == "front" else -look.bag_side
        p.line([(-s * (sw - 0.03), Y_SH - 0.01), (s * (hw + 0.01), 0.44)], fill=shade(colour, 0.85), width=0.011)
        p.rrect(s * (hw + 0.012) - 0.042, 0.42, s * (hw + 0.012) + 0.042, 0.50, 0.012,
                fill=colour, outline=shade(colour, 0.55))
        p.line([(s * (hw + 0.012) - 0.042, 0.445), (s * (hw + 0.012) + 0.042, 0.445)],
               fill=shade(colour, 0.7), width=0.004)
    elif bag == "handbag":
        hx, hy = hands[-1] if look.side else hands[0 if (look.bag_side < 0) == (view == "front") else 1]
        p.line([(hx - 0.022, hy + 0.03), (hx, hy - 0.005), (hx + 0.022, hy + 0.03)],
               fill=shade(colour, 0.7), width=0.007)
        p.rrect(hx - 0.037, hy + 0.025, hx + 0.037, hy + 0.09, 0.012, fill=colour, outline=shade(colour, 0.55))


def _draw_head(p: Painter, look: Look) -> None:
    """Head, face and hair as ``look.view`` shows them, then the hat."""
    a, skin, hair = look.a, look.skin, look.hair
    long_hair = a["hair_length"] == "long"
    if look.view == "front":
        p.ellipse(0.0, 0.068, 0.048, 0.06, fill=skin)
        p.chord(0.0, 0.064, 0.053, 0.066, 160, 20, fill=hair)
        p.ellipse(0.0, 0.08, 0.043, 0.048, fill=skin)
        if long_hair:
            for sx in (-1, 1):
                p.poly([(sx * 0.04, 0.045), (sx * 0.066, 0.05), (sx * 0.072, 0.25), (sx * 0.044, 0.25)], fill=hair)
        for sx in (-1, 1):
            p.ellipse(sx * 0.018, 0.076, 0.0055, 0.0055, fill=DARK)
        p.line([(-0.011, 0.103), (0.011, 0.103)], fill=shade(skin, 0.6), width=0.004)
        if a["glasses"]:
            for sx in (-1, 1):
                p.ellipse(sx * 0.019, 0.076, 0.014, 0.011, fill=None, outline=DARK, width=0.004)
            p.line([(-0.006, 0.075), (0.006, 0.075)], fill=DARK, width=0.004)
    elif look.view == "back":
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
            p.ellipse(0.0, 0.078, 0.009, 0.013, fill=shade(skin, 0.92))
        p.ellipse(0.03, 0.072, 0.005, 0.005, fill=DARK)
        p.line([(0.03, 0.102), (0.043, 0.101)], fill=shade(skin, 0.6), width=0.004)
        if a["glasses"]:
            p.ellipse(0.031, 0.072, 0.013, 0.011, fill=None, outline=DARK, width=0.004)
            p.line([(0.018, 0.07), (-0.004, 0.07)], fill=DARK, width=0.004)
    if a["hat_type"] is not None:
        _draw_hat(p, look)


def _draw_hat(p: Painter, look: Look) -> None:
    """A cap (peak forward), a beanie (folded band) or a wide-brimmed hat."""
    hat, view = look.a["hat_type"], look.view
    hat_c = shade(COLOURS[look.a["hat_colour"]], look.shades["hat"])
    band = shade(hat_c, 0.7)
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
