"""Finding the images to index and decoding them (corrupt files are reasons, not crashes)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from textreid.data.images import DECODE_ERRORS, decode_image
from textreid.search.errors import SearchError
from textreid.search.store import IMAGE_EXTENSIONS


def collect_images(images: str | Path | Sequence[str | Path]) -> tuple[Path, list[Path]]:
    """Resolve the ``images`` argument to ``(root, sorted absolute image paths)``.

    ``images`` is a folder (searched recursively for image extensions, case-insensitive,
    skipping hidden folders), a text file with one path per line (relative lines are taken
    relative to the file's folder; blank lines and ``#`` comments ignored), or a list of paths.
    """
    if isinstance(images, str | Path):
        src = Path(images)
        if src.is_dir():
            root = Path(os.path.abspath(src))
            found: list[Path] = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                found.extend(
                    Path(dirpath, f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)
                )
            if not found:
                raise FileNotFoundError(
                    f"no images found under {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, "
                    "any case, in all non-hidden sub-folders)"
                )
            return root, sorted(found, key=lambda p: p.relative_to(root).as_posix())
        if src.is_file() and src.name.lower().endswith(IMAGE_EXTENSIONS):
            files = [src]  # a single image
        elif src.is_file():
            base = src.parent
            try:
                lines = src.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise SearchError(
                    f"{src} is not a text file listing image paths (one per line): {e}"
                ) from None
            files = [
                Path(line.strip()) for line in lines if line.strip() and not line.startswith("#")
            ]
            files = [p if p.is_absolute() else base / p for p in files]
            if not files:
                raise SearchError(f"image list {src} names no images")
        else:
            raise FileNotFoundError(f"{src} is neither a folder of images nor a list file")
    else:
        files = [Path(p) for p in images]
        if not files:
            raise SearchError("the list of images is empty")
    # Listed files that are missing are skipped (and listed in the manifest) by build_index.
    files = [Path(os.path.abspath(p)) for p in files]
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    unique = {p.relative_to(root).as_posix(): p for p in files}
    return root, [unique[k] for k in sorted(unique)]


def load_image(path: Path) -> Image.Image | str:
    """Decode an image fully to RGB (``data.images.decode_image``), or return why it cannot be used."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        return decode_image(path)
    except UnidentifiedImageError:
        return "not an image (PIL cannot identify the file format)"
    except Image.DecompressionBombError as e:
        return f"image too large: {e}"
    except DECODE_ERRORS as e:
        return f"corrupt or truncated image: {e}"
