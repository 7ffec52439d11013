"""Decoding image files: one function for the loaders, the data check, the API and search.

``decode_image`` never changes PIL's process-wide settings (such as
``ImageFile.LOAD_TRUNCATED_IMAGES``), so it is safe to call from many threads at once. With
PIL's defaults a truncated or corrupt file raises instead of returning a half-grey image; an
application that relaxes PIL for the whole process gets that relaxed behaviour here too.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

# What decode_image raises for a file that is not a usable image (UnidentifiedImageError is an OSError).
DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_image(path: str | Path) -> Image.Image:
    """The image at ``path`` decoded completely into memory as RGB (the file is closed on return)."""
    with Image.open(path) as im:
        im.load()  # decode every byte now: a truncated file fails here, not later in a worker
        return im.convert("RGB")

