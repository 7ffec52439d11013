"""One helper per concept: image decoding, L2 normalisation, state-dict prefixes and diffs, unwrapping."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from textreid.data.images import DECODE_ERRORS, decode_image
from textreid.embeddings import normalise
from textreid.models.state_dict import diff_state_dicts, strip_prefix, unwrap_model


def _jpeg(path: Path, size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_decode_image_is_rgb_and_refuses_truncated_files_without_touching_pil(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    data = _jpeg(good)
    grey = tmp_path / "grey.png"
    Image.new("L", (5, 7), 90).save(grey)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    seen: list[bool] = []
    stop = threading.Event()

    def watch() -> None:  # another thread must never see PIL's global flag change
        while not stop.is_set():
            seen.append(ImageFile.LOAD_TRUNCATED_IMAGES)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(20):
            assert decode_image(good).mode == "RGB" and decode_image(good).size == (40, 30)
            assert decode_image(grey).getpixel((0, 0)) == (90, 90, 90)
            with pytest.raises(DECODE_ERRORS, match="truncated"):
                decode_image(truncated)
    finally:
        stop.set()
        watcher.join()
    assert seen and not any(seen)


def test_normalise_torch_and_numpy_agree_with_the_definition() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], dtype=np.float64)
    expected = np.array([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    out_np = normalise(x)
    out_t = normalise(torch.from_numpy(x))
    assert out_np.dtype == np.float32 and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_np, expected, rtol=1e-6)
    np.testing.assert_allclose(out_t.numpy(), expected, rtol=1e-6)


def test_strip_prefix_only_when_every_key_has_it() -> None:
    assert strip_prefix({"module.a": 1, "module.b": 2}) == {"a": 1, "b": 2}
    assert strip_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}
    assert strip_prefix({"_orig_mod.a": 1}, "_orig_mod.") == {"a": 1}
    assert strip_prefix({}) == {}


def test_diff_and_unwrap() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    own = model.state_dict()
    file = {"0.weight": torch.zeros(3, 5), "extra": torch.zeros(1)}
    diff = diff_state_dicts(own, file)
    assert diff.missing == ["0.bias"] and diff.unexpected == ["extra"] and diff.wrong_shape_keys == ["0.weight"]
    assert diff.wrong_shape == ["0.weight: file (3, 5) vs model (3, 2)"] and not diff.ok
    assert diff_state_dicts(own, dict(own)).ok
    assert unwrap_model(torch.nn.DataParallel(model)) is model
    assert unwrap_model(model) is model
