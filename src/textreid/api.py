"""Python API: ``textreid.load(path)`` -> an :class:`Encoder` that embeds captions and pedestrian images.

    import textreid
    enc = textreid.load("output/best.pth", device="cuda")
    q = enc.encode_text(["a woman in a red coat carrying a white handbag"])  # [1, D], unit norm
    g = enc.encode_images(["gallery/0001.jpg", "gallery/0002.jpg"])  # [2, D], unit norm
    scores = q @ g.T  # cosine similarities
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from PIL import Image

from textreid.data.images import decode_image
from textreid.embeddings import normalise
from textreid.models.checkpoint import (
    FORMAT,
    CheckpointError,
    is_authors_checkpoint,
    load_checkpoint,
    unwrap_model,
)

ImageInput = Image.Image | str | Path | torch.Tensor


class Encoder:
    """Embeds texts and images with a TextReID model; outputs are L2-normalised ``[N, D]`` float32.

    ``textreid.load`` builds one from a checkpoint; an in-memory model (e.g. the trainer's) is wrapped
    directly and stays on its device unless ``device`` is given.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], dict[str, torch.Tensor]],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        config: Any | None = None,
        vocab: Any | None = None,
        checkpoint_path: str | Path | None = None,
        preprocess: Any | None = None,
    ) -> None:
        self.model = unwrap_model(model)
        if device is not None:
            self.model.to(device)
        if dtype is not None:
            self.model.to(dtype)
        first = next(self.model.parameters(), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
        self.dtype = dtype if dtype is not None else (first.dtype if first is not None else torch.float32)
        self.tokenizer = tokenizer
        self.transform = transform
        self.config = config
        self.vocab = vocab
        self.preprocess = preprocess  # the data.preprocess.Preprocess the model was trained with, when known
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None

    @property
    def embed_dim(self) -> int:
        """Width D of the embeddings."""
        return int(self.model.embed_dim)

    def _run(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Call ``fn`` with the model in eval mode, restoring its previous mode afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return fn()
        finally:
            self.model.train(was_training)

    def ignored_words(self, text: str) -> list[str]:
        """Words of ``text`` missing from the model's word vocabulary (ignored when embedding).

        Raises :class:`~textreid.UnknownWordsError` when none of its words is known: such a
        caption would embed like an empty one. Models reading CLIP byte-pair tokens know every
        string, so nothing is ignored.
        """
        from textreid.search.query import vocabulary_check

        vocab = getattr(self.tokenizer, "vocab", None)
        return [] if vocab is None else vocabulary_check(vocab, text)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Captions -> L2-normalised ``[N, D]`` float32 embeddings on ``self.device``.

        Refused: a bare string (``TypeError``), a non-string item (``TypeError``), an empty or
        blank caption (``ValueError``), and a caption none of whose words the model's vocabulary
        knows (:class:`~textreid.UnknownWordsError`, a ``ValueError``). Partly unknown captions
        are embedded from their known words (see :meth:`ignored_words`).
        """
        from textreid.search.query import check_query

        if isinstance(texts, str):
            raise TypeError("encode_text expects a list of strings, got a single string; wrap it in a list")
        texts = list(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for i, text in enumerate(texts):
            check_query(text, position=i + 1, noun="text")
            self.ignored_words(text)

        def run() -> torch.Tensor:
            out = []
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start : start + batch_size])
                tokens = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in tokens.items()}
                emb = self.model.embed_texts(tokens)  # [b, D]
                out.append(normalise(emb))
            if not out:
                return torch.empty(0, self.embed_dim, device=self.device)
            return torch.cat(out)  # [N, D]

        return self._run(run)

    def _image_tensor(self, image: ImageInput) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            if image.dim() != 3:
                raise ValueError(f"image tensors must be transformed [3, H, W], got shape {tuple(image.shape)}")
            return image
        if isinstance(image, (str, Path)):
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"image not found: {path}")
            image = decode_image(path)
        elif isinstance(image, Image.Image):
            image = image.convert("RGB")
        else:
            raise TypeError(f"images must be PIL images, paths or [3, H, W] tensors, got {type(image).__name__}")
        return self.transform(image)  # [3, H, W]

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 64) -> torch.Tensor:
        """PIL images, file paths or transformed ``[3, H, W]`` tensors -> L2-normalised ``[N, D]`` float32."""
        if isinstance(images, (str, Path, Image.Image)) or (isinstance(images, torch.Tensor) and images.dim() == 3):
            raise TypeError(
                f"encode_images expects a list of images, got a single {type(images).__name__}; "
                "wrap it in a list: encode_images([image])"
            )
        images = list(images)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        def run() -> torch.Tensor:
            out = []
            for start in range(0, len(images), batch_size):
                batch = torch.stack([self._image_tensor(im) for im in images[start : start + batch_size]])
                batch = batch.to(self.device, self.dtype)  # [b, 3, H, W]
                emb = self.model.embed_images(batch)  # [b, D]
                out.append(normalise(emb))
            if not out:
                return torch.empty(0, self.embed_dim, device=self.device)
            return torch.cat(out)  # [N, D]

        return self._run(run)


def load(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Encoder:
    """Load one of our checkpoints (config + vocabulary + weights) as an :class:`Encoder`."""
    from textreid.config import from_dict
    from textreid.engine.setup import preprocess_from_checkpoint
    from textreid.models.build import model_from_state_dict

    ckpt = load_checkpoint(path)
    if is_authors_checkpoint(ckpt):
        raise CheckpointError(
            f"{path} is an authors' best.pth: it holds no config or vocabulary. Convert it once with "
            "`textreid convert --config-file <their yaml> --checkpoint-file best.pth --root DIR --out ours.pth` "
            "(evaluation needs no conversion: `textreid test` reads it directly)"
        )
    if ckpt.get("format") != FORMAT or not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path}: not a textreid checkpoint (format {ckpt.get('format')!r}, expected {FORMAT!r})")
    cfg = from_dict(ckpt["config"])
    preprocess = preprocess_from_checkpoint(ckpt, cfg, source=str(path))
    model = model_from_state_dict(cfg, ckpt["model"])
    model.eval()
    return Encoder(
        model,
        preprocess.text_tokenizer(),
        preprocess.transform(),
        device=device,
        dtype=dtype,
        config=cfg,
        vocab=preprocess.vocab,
        checkpoint_path=path,
        preprocess=preprocess,
    )
