"""CLIP weight files in every format read back to the model's weights; architecture inference; errors."""

from __future__ import annotations

import pytest
import torch

from clip_factory import (
    EMBED_DIM,
    TEXT_CFG,
    fp16_rounded,
    is_torchscript_archive,
    save_openai_jit,
    save_safetensors,
    save_state_dict,
    tiny_clip,
)
from textreid.models.clip_weights import (
    ClipWeightsError,
    clip_architecture,
    load_clip_state_dict,
    split_clip_state_dict,
)

TEXT_KEYS_TOP = {
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "ln_final.bias",
    "text_projection",
}


@pytest.fixture(scope="module")
def resnet_model():
    return tiny_clip("resnet", resnet_layers=[1, 2, 1, 1])


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["jit", "jit_fp16", "open_clip_ckpt", "bin", "safetensors"])
def test_every_format_reads_back_the_weights(resnet_model, tmp_path, fmt):
    saver = {
        "jit": lambda p: save_openai_jit(resnet_model, p),
        "jit_fp16": lambda p: save_openai_jit(resnet_model, p, fp16=True),
        "open_clip_ckpt": lambda p: save_state_dict(resnet_model, p, open_clip_checkpoint=True),
        "bin": lambda p: save_state_dict(resnet_model, p),
        "safetensors": lambda p: save_safetensors(resnet_model, p),
    }[fmt]
    path = saver(
        tmp_path
        / (
            "model.safetensors"
            if fmt == "safetensors"
            else f"model.{'bin' if fmt == 'bin' else 'pt'}"
        )
    )
    if fmt.startswith("jit"):
        assert is_torchscript_archive(path)
    sd = load_clip_state_dict(path)
    expected = _weights(fp16_rounded(resnet_model) if fmt == "jit_fp16" else resnet_model)
    for k, v in expected.items():
        assert k in sd, k
        assert sd[k].dtype == v.dtype, k  # float32 out even for float16 files
        torch.testing.assert_close(sd[k], v, rtol=0, atol=0, msg=k)


def test_split_and_architecture_resnet(resnet_model):
    sd = _weights(resnet_model)
    visual, text = split_clip_state_dict(sd)
    assert set(visual) == set(resnet_model.visual.state_dict())
    assert TEXT_KEYS_TOP <= set(text)
    assert all(k in TEXT_KEYS_TOP or k.startswith("transformer.resblocks.") for k in text)
    assert "logit_scale" not in text
    arch = clip_architecture(sd)
    assert arch["vision"] == "resnet"
    assert arch["vision_layers"] == [1, 2, 1, 1]
    assert arch["vision_width"] == 8
    assert arch["vision_heads"] == 8 * 32 // 64
    assert arch["grid"] == (2, 2) and arch["image_size"] == 64
    assert arch["output_dim"] == EMBED_DIM and arch["embed_dim"] == EMBED_DIM
    assert arch["context_length"] == TEXT_CFG["context_length"]
    assert arch["vocab_size"] == TEXT_CFG["vocab_size"]
    assert (arch["text_width"], arch["text_layers"], arch["text_heads"]) == (64, 1, 1)


def test_architecture_vit():
    arch = clip_architecture(_weights(tiny_clip("vit")))
    assert arch["vision"] == "vit"
    assert (
        arch["patch_size"],
        arch["vision_width"],
        arch["vision_layers"],
        arch["vision_heads"],
    ) == (16, 64, 2, 1)
    assert arch["grid"] == (4, 4) and arch["image_size"] == 64 and arch["output_dim"] == EMBED_DIM


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "RN50.pt"
    with pytest.raises(ClipWeightsError, match="not found") as info:
        load_clip_state_dict(path)
    assert str(path) in str(info.value)


def test_not_a_clip_checkpoint_says_what_was_expected(tmp_path):
    path = tmp_path / "best.pth"
    torch.save(
        {"model": {"visual_model.conv1.weight": torch.zeros(2), "embed_model.x": torch.zeros(1)}},
        path,
    )
    with pytest.raises(ClipWeightsError) as info:
        load_clip_state_dict(path)
    msg = str(info.value)
    assert str(path) in msg and "visual.*" in msg and "visual_model.conv1.weight" in msg


def test_garbage_file_names_the_path(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(ClipWeightsError) as info:
        load_clip_state_dict(path)
    assert str(path) in str(info.value)
