"""SOLVER.RECOMPUTE_STAGES: a ResNet's leading stages recomputed in backward give the same step, keep less."""

from __future__ import annotations

import copy

import pytest
import torch

from textreid.config import ConfigError, load_config, validate_config
from textreid.models.recompute import set_recompute_stages
from textreid.models.visual import build_visual_tower

TOWERS = {"m_resnet50": dict(layers=[1, 2, 1, 1], width=8), "resnet50": dict(layers=[1, 2, 1, 1])}


def _tower(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_visual_tower(name, image_size=(64, 32), res5_stride=1, **TOWERS[name]).train()


def _step(tower: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict, dict, int]:
    """Output, gradients and BatchNorm buffers after one forward + backward; bytes autograd kept."""
    kept = {}  # storage -> bytes, activations only (weights are kept in any case)
    weights = {p.untyped_storage().data_ptr() for p in tower.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = tower(images)
    (out.square().sum() + out.sum()).backward()
    grads = {n: p.grad.clone() for n, p in tower.named_parameters()}
    return out.detach(), grads, {n: b.clone() for n, b in tower.named_buffers()}, sum(kept.values())


@pytest.mark.parametrize("name", sorted(TOWERS))
@pytest.mark.parametrize("stages", [1, 2, 5])
def test_recomputed_stages_give_the_same_step_and_keep_less(name, stages):
    images = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    plain = _tower(name)
    recomputed = copy.deepcopy(plain)
    set_recompute_stages(torch.nn.ModuleDict({"visual": recomputed}), stages)
    assert recomputed.recompute_stages == stages
    out0, grads0, buffers0, kept0 = _step(plain, images)
    out1, grads1, buffers1, kept1 = _step(recomputed, images)
    torch.testing.assert_close(out1, out0, rtol=0, atol=0)
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=0, atol=0, msg=n)
    # the recomputation leaves BatchNorm's running statistics as one forward left them
    for n in buffers0:
        torch.testing.assert_close(buffers1[n], buffers0[n], rtol=0, atol=0, msg=n)
    # what stays: each recomputed block's input (measured at this size: 0.81-0.83, 0.63-0.65, 0.18-0.25)
    assert kept1 < kept0 * {1: 0.9, 2: 0.7, 5: 0.3}[stages]


def test_no_recomputation_without_autograd():
    tower = _tower("m_resnet50")
    tower.recompute_stages = 2
    with torch.no_grad():  # e.g. the momentum key encoder: nothing is kept, so nothing is recomputed
        out = tower(torch.randn(2, 3, 64, 32))
    assert not out.requires_grad and tower.bn1.num_batches_tracked.item() == 1


def test_a_vit_tower_is_refused_naming_the_key():
    vit = build_visual_tower("clip_vit_b16", image_size=(64, 32), width=32, layers=1, heads=2)
    with pytest.raises(ValueError, match=r"SOLVER.RECOMPUTE_STAGES = 2: the image tower ClipViT"):
        set_recompute_stages(torch.nn.ModuleDict({"visual": vit}), 2)
    set_recompute_stages(torch.nn.ModuleDict({"visual": vit}), 0)  # 0 is fine for any tower


@pytest.mark.parametrize("value", ["-1", "6"])
def test_out_of_range_is_refused_by_the_config(value):
    cfg = load_config("synth/tiny_moco", ["SOLVER.RECOMPUTE_STAGES", value])
    with pytest.raises(ConfigError, match=rf"SOLVER.RECOMPUTE_STAGES = {value}: expected an integer in \[0, 5\]"):
        validate_config(cfg)
