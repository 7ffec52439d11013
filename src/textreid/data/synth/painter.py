"""Drawing in person units: a thin layer over PIL's ImageDraw used by every body part.

Coordinates are in person heights: x from the body axis (times the person's build, mirrored when
the person faces left), y down from the top of the head. The body constants below are in the
same units, so the figure scales with the person.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw


def shade(rgb: Sequence[int], s: float) -> tuple[int, int, int]:
    """Darken (s < 1) by scaling, lighten (s > 1) by mixing towards white, so both stay visible."""
    t = min(1.0, (s - 1.0) * 1.6)
    r, g, b = (int(max(0, min(255, c * s if s <= 1.0 else c + (255 - c) * t))) for c in rgb)
    return (r, g, b)


Y_SH = 0.185  # shoulder line, in person heights from the top of the head
Y_HIP = 0.49
LEG_LEN = 0.47
ARM_LEN = 0.32


class Painter:
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
                      fill=colour, outline=shade(colour, 0.7))
        return (x0 + dx * length, y0 + dy * length)

