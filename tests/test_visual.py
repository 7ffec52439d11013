"""Image towers: shapes at 384x128, stride-1 maps, positional-embedding resizing, loading CLIP files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from clip_factory import (
    EMBED_DIM,
    fp16_rounded,
    is_torchscript_archive,
    save_openai_jit,
    save_safetensors,
    save_state_dict,
    tiny_clip,
)
from textreid.models.clip_weights import ClipWeightsError
from textreid.models.visual import (
    VISUAL_TOWERS,
    ClipAttentionPool,
    build_visual_tower,
    resize_pos_embed,
    visual_family,
)

TINY_RESNET = dict(layers=[1, 1, 1, 1], width=8)
TINY_VIT = dict(width=32, layers=1, heads=2)
# registry name -> (tiny size kwargs, expected out_dim: the named model's output size)
EXPECTED = {
    "m_resnet": (TINY_RESNET, 1024),
    "m_resnet50": (TINY_RESNET, 1024),
    "m_resnet101": (TINY_RESNET, 512),
    "m_resnet50x4": (TINY_RESNET, 640),
    "m_resnet50x16": (TINY_RESNET, 768),
    "m_resnet50x64": (TINY_RESNET, 1024),
    "clip_vit_b32": (TINY_VIT, 512),
    "clip_vit_b16": (TINY_VIT, 512),
    "clip_vit_l14": (TINY_VIT, 768),
    "resnet50": (dict(layers=[1, 1, 1, 1]), 2048),
    "resnet101": (dict(layers=[1, 1, 1, 1]), 2048),
}


def test_every_registered_tower_is_tested():
    assert set(VISUAL_TOWERS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_output_shape_at_384x128(name):
    sizes, out_dim = EXPECTED[name]
    torch.manual_seed(0)
    stride = {} if visual_family(name) == "clip_vit" else {"res5_stride": 1}
    tower = build_visual_tower(name, image_size=(384, 128), **stride, **sizes).eval()
    assert tower.out_dim == out_dim
    with torch.no_grad():
        out = tower(torch.randn(2, 3, 384, 128))
    assert out.shape == (2, out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["m_resnet50", "resnet50"])
@pytest.mark.parametrize(("stride", "grid"), [(1, (24, 8)), (2, (12, 4))])
def test_last_stage_stride_sets_the_final_map(name, stride, grid):
    sizes = EXPECTED[name][0]
    tower = build_visual_tower(name, image_size=(384, 128), res5_stride=stride, **sizes).eval()
    with torch.no_grad():
        fmap = tower.features(torch.randn(1, 3, 384, 128))
    assert tuple(fmap.shape[-2:]) == grid
    if name == "m_resnet50":
        assert tower.attnpool.positional_embedding.shape == (grid[0] * grid[1] + 1, 8 * 32)


def test_vit_grid_and_overlapping_patches():
    tower = build_visual_tower("clip_vit_b16", image_size=(384, 128), **TINY_VIT)
    assert tower.positional_embedding.shape == (24 * 8 + 1, 32)
    overlap = build_visual_tower(
        "clip_vit_b16", image_size=(384, 128), stride=12, **TINY_VIT
    ).eval()
    grid = ((384 - 16) // 12 + 1, (128 - 16) // 12 + 1)  # 31 x 10
    assert overlap.positional_embedding.shape == (grid[0] * grid[1] + 1, 32)
    assert overlap.conv1(torch.zeros(1, 3, 384, 128)).shape[-2:] == grid
    with torch.no_grad():
        assert overlap(torch.randn(1, 3, 384, 128)).shape == (1, 512)


def test_default_rn50_sizes():
    tower = build_visual_tower("m_resnet50")
    assert tower.out_dim == 1024 and tower.attnpool.num_heads == 32
    assert [len(getattr(tower, f"layer{i}")) for i in (1, 2, 3, 4)] == [3, 4, 6, 3]
    assert tower.attnpool.positional_embedding.shape == (24 * 8 + 1, 2048)


def test_state_dict_keys_are_clips_visual_keys():
    model = tiny_clip("resnet")
    tower = build_visual_tower("m_resnet50", res5_stride=1, output_dim=EMBED_DIM, **TINY_RESNET)
    assert set(tower.state_dict()) == {
        k[len("visual.") :] for k in model.state_dict() if k.startswith("visual.")
    }
    for key in (
        "conv1.weight",
        "layer4.0.bn3.running_var",
        "layer4.0.downsample.0.weight",
        "attnpool.q_proj.weight",
    ):
        assert key in tower.state_dict()
    vit = build_visual_tower("clip_vit_b16", output_dim=EMBED_DIM, width=64, layers=2)
    vit_model = tiny_clip("vit")
    assert set(vit.state_dict()) == {
        k[len("visual.") :] for k in vit_model.state_dict() if k.startswith("visual.")
    }


def test_attention_pool_equals_open_clips_all_token_pool():
    """Our class-token-only, reassociated pool computes open_clip's (and the authors') pool: values and gradients."""
    from open_clip.modified_resnet import AttentionPool2d

    torch.manual_seed(0)
    pool = ClipAttentionPool(1, 64, 4, 48)
    pool.positional_embedding = torch.nn.Parameter(torch.randn(3 * 2 + 1, 64) / 8)
    for m in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
        torch.nn.init.normal_(m.bias, std=0.5)
    x = torch.randn(5, 64, 3, 2).relu().contiguous(memory_format=torch.channels_last).requires_grad_()
    ours, ref = pool(x), AttentionPool2d.forward(pool, x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    inputs = [x, *(p for n, p in pool.named_parameters() if n != "k_proj.bias")]  # its true gradient is 0
    for g_ours, g_ref in zip(torch.autograd.grad(ours.square().sum(), inputs),
                             torch.autograd.grad(ref.square().sum(), inputs), strict=True):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-5)


def test_resize_pos_embed_matches_an_independent_interpolation():
    torch.manual_seed(0)
    channels = 6
    pos = torch.randn(1 + 7 * 7, channels)
    out = resize_pos_embed(pos, (24, 8))
    assert out.shape == (1 + 24 * 8, channels)
    torch.testing.assert_close(out[0], pos[0], rtol=0, atol=0)  # class token kept
    # independent path: channels-first view of the 7x7 grid, interpolate, flatten row-major
    grid = pos[1:].t().reshape(1, channels, 7, 7)
    expected = F.interpolate(grid, size=(24, 8), mode="bilinear", align_corners=False)
    expected = expected.reshape(channels, 24 * 8).t()
    torch.testing.assert_close(out[1:], expected)
    # grid cell (r, c) of the output is row r*8 + c
    torch.testing.assert_close(out[1 + 5 * 8 + 3], expected.reshape(24, 8, channels)[5, 3])
    torch.testing.assert_close(resize_pos_embed(pos, (7, 7)), pos, rtol=0, atol=0)
    # a constant grid stays constant under bilinear resizing
    const = torch.cat([torch.zeros(1, 2), torch.full((49, 2), 3.0)])
    torch.testing.assert_close(resize_pos_embed(const, (5, 9))[1:], torch.full((45, 2), 3.0))


# --------------------------------------------------------------------------- loading CLIP files
@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    files = {}
    for kind in ("resnet", "vit"):
        model = tiny_clip(kind, seed=3)
        files[kind] = {
            "model": model,
            "jit": save_openai_jit(model, root / f"{kind}_openai.pt"),
            "jit_fp16": save_openai_jit(model, root / f"{kind}_openai_fp16.pt", fp16=True),
            "open_clip": save_state_dict(
                model, root / f"{kind}_epoch_3.pt", open_clip_checkpoint=True
            ),
            "safetensors": save_safetensors(model, root / f"{kind}.safetensors"),
        }
    return files


def _tiny_tower(kind: str, **kw):
    if kind == "resnet":
        return build_visual_tower("m_resnet50", output_dim=EMBED_DIM, **TINY_RESNET, **kw)
    kw.pop("res5_stride", None)  # a ResNet setting
    return build_visual_tower("clip_vit_b16", output_dim=EMBED_DIM, width=64, layers=2, **kw)


@pytest.mark.parametrize("kind", ["resnet", "vit"])
@pytest.mark.parametrize("fmt", ["jit", "jit_fp16", "open_clip", "safetensors"])
def test_loaded_tower_reproduces_encode_image(clip_files, kind, fmt):
    entry = clip_files[kind]
    if fmt.startswith("jit"):
        assert is_torchscript_archive(entry[fmt])
    reference = fp16_rounded(entry["model"]) if fmt == "jit_fp16" else entry["model"]
    # same grid as the source (64x64 -> ResNet 2x2 with stride 2, ViT 4x4): no resizing
    tower = _tiny_tower(kind, image_size=(64, 64), res5_stride=2, pretrained=str(entry[fmt])).eval()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            tower(images), reference.encode_image(images), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_loading_at_person_size_resizes_only_the_positional_embedding(clip_files, kind):
    entry = clip_files[kind]
    tower = _tiny_tower(
        kind, image_size=(384, 128), res5_stride=1, pretrained=entry["safetensors"]
    ).eval()
    source = {
        k[len("visual.") :]: v
        for k, v in entry["model"].state_dict().items()
        if k.startswith("visual.")
    }
    key = "attnpool.positional_embedding" if kind == "resnet" else "positional_embedding"
    own = tower.state_dict()
    torch.testing.assert_close(own[key], resize_pos_embed(source[key], (24, 8)))
    for k, v in source.items():
        if k != key:
            torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)
    with torch.no_grad():
        assert tower(torch.randn(1, 3, 384, 128)).shape == (1, EMBED_DIM)


def test_architecture_mismatch_names_the_file_and_keys(clip_files):
    path = clip_files["resnet"]["jit"]
    with pytest.raises(ClipWeightsError) as info:
        build_visual_tower(
            "m_resnet50", layers=[1, 1, 2, 1], width=8, output_dim=EMBED_DIM, pretrained=path
        )
    msg = str(info.value)
    assert str(path) in msg and "layer3.1." in msg and "layers [1, 1, 1, 1]" in msg
    with pytest.raises(ClipWeightsError) as info:  # the default RN50 width against a width-8 file
        build_visual_tower("m_resnet50", pretrained=path)
    assert str(path) in str(info.value) and "shape" in str(info.value)


def test_vit_file_into_a_resnet_tower_is_refused(clip_files):
    path = clip_files["vit"]["open_clip"]
    with pytest.raises(ClipWeightsError) as info:
        build_visual_tower("m_resnet50", **TINY_RESNET, pretrained=path)
    assert str(path) in str(info.value) and "ViT" in str(info.value)


def test_missing_and_wrong_files_name_the_path(tmp_path):
    missing = tmp_path / "RN50.pt"
    with pytest.raises(ClipWeightsError) as info:
        build_visual_tower("m_resnet50", **TINY_RESNET, pretrained=missing)
    assert str(missing) in str(info.value)
    wrong = tmp_path / "imagenet.pth"
    torch.save(
        torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1]).state_dict(),
        wrong,
    )
    with pytest.raises(ClipWeightsError) as info:
        build_visual_tower("clip_vit_b16", **TINY_VIT, pretrained=wrong)
    assert str(wrong) in str(info.value) and "visual." in str(info.value)


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as info:
        build_visual_tower("m_resnet51")
    assert "m_resnet50" in str(info.value) and "clip_vit_b16" in str(info.value)


def test_size_kwargs_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match="patch_size=16"):
        build_visual_tower("m_resnet50", patch_size=16, **TINY_RESNET)
    with pytest.raises(ValueError, match="res5_stride=1"):
        build_visual_tower("clip_vit_b16", res5_stride=1, **TINY_VIT)
    with pytest.raises(ValueError, match="width=64"):  # torchvision ResNets have fixed widths
        build_visual_tower("resnet50", width=64, layers=[1, 1, 1, 1])
    # sizes left unset (0/None) may be passed to any family
    tower = build_visual_tower("clip_vit_b16", res5_stride=0, **TINY_VIT)
    assert tower.out_dim == 512


def test_families_come_from_the_registry():
    assert visual_family("m_resnet") == visual_family("m_resnet101") == "clip_resnet"
    assert visual_family("clip_vit_l14") == "clip_vit"
    assert visual_family("resnet50") == "torchvision_resnet"
    with pytest.raises(KeyError, match="clip_vit_b16"):
        visual_family("vit_b16")


def test_torchvision_baseline_loads_torchvision_weights(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1]).eval()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)  # includes the ImageNet classifier fc.*
    tower = build_visual_tower(
        "resnet50", layers=[1, 1, 1, 1], res5_stride=2, pretrained=path
    ).eval()
    reference.fc = torch.nn.Identity()
    images = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(tower(images), reference(images), rtol=1e-5, atol=1e-5)


def test_config_sizes_reach_the_family_of_the_tower():
    from textreid.config import Config
    from textreid.models.build import build_model

    cfg = Config()
    cfg.model.pretrained = "none"  # random towers (unset = the authors' weight files)
    cfg.input.height, cfg.input.width = 64, 32
    cfg.model.visual_model = "clip_vit_b16"
    v = cfg.model.vit
    v.width, v.layers, v.heads, v.output_dim = 32, 1, 2, 16
    cfg.model.gru.onehot = "yes"
    model = build_model(cfg, num_classes=3, vocab_size=10, word_table=None)
    assert model.visual.out_dim == 16 and model.visual.grid == (4, 2)
    cfg.model.resnet.width = 8  # a ResNet size on a ViT model is a mistake worth naming
    with pytest.raises(ValueError, match=r"MODEL.RESNET.WIDTH = 8"):
        build_model(cfg, num_classes=3, vocab_size=10, word_table=None)
    cfg = Config()
    cfg.model.pretrained = "none"  # random towers (unset = the authors' weight files)
    cfg.model.vit.patch_size = 16
    with pytest.raises(ValueError, match=r"'m_resnet50' does not use MODEL.VIT.PATCH_SIZE = 16"):
        build_model(cfg, num_classes=3, vocab_size=10, word_table=None)
