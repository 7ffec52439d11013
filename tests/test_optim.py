"""The paper's optimisation recipe: parameter groups and the per-epoch lr schedule."""

import copy

import pytest
import torch
from torch import nn

from textreid.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups


def test_warmup_and_step_decay_by_hand():
    kw = dict(schedule="step", steps=(40, 70), gamma=0.1, warmup_epochs=5, warmup_factor=0.1)
    # linear warm-up from 0.1x: factor = 0.1 * (1 - e/5) + e/5
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(1, **kw) == pytest.approx(0.28)
    assert lr_factor(4, **kw) == pytest.approx(0.82)
    assert lr_factor(5, **kw) == pytest.approx(1.0)
    assert lr_factor(39, **kw) == pytest.approx(1.0)
    assert lr_factor(40, **kw) == pytest.approx(0.1)
    assert lr_factor(70, **kw) == pytest.approx(0.01)


def test_cosine_reaches_floor():
    kw = dict(schedule="cosine", num_epochs=10, warmup_epochs=0, target_factor=0.0)
    assert lr_factor(0, **kw) == pytest.approx(1.0)
    assert lr_factor(5, **kw) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="LRSCHEDULER"):
        lr_factor(0, schedule="poly")


def test_biases_get_double_lr_and_no_weight_decay():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[1].weight.requires_grad_(False)  # frozen parameters are left out
    opt = build_optimizer(model, name="Adam", base_lr=1e-4, weight_decay=4e-5, bias_lr_factor=2.0)
    weights, biases = opt.param_groups
    assert [p.shape for p in weights["params"]] == [torch.Size([4, 3])]
    assert len(biases["params"]) == 2
    assert weights["lr"] == 1e-4 and weights["weight_decay"] == 4e-5
    assert biases["lr"] == 2e-4 and biases["weight_decay"] == 0.0


def test_scheduler_steps_per_epoch_and_resumes():
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, base_lr=1.0)
    sched = build_scheduler(opt, schedule="step", steps=(2,), warmup_epochs=0)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1])
    opt2 = build_optimizer(model, base_lr=1.0)
    sched2 = build_scheduler(opt2, schedule="step", steps=(2,), warmup_epochs=0)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 3


def test_fused_adam_matches_the_reference_update() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    reference = copy.deepcopy(model)
    ours = build_optimizer(model, name="Adam", base_lr=1e-2, weight_decay=4e-5)
    ref = torch.optim.Adam(param_groups(reference, base_lr=1e-2, weight_decay=4e-5), lr=1e-2, foreach=False)
    assert ours.defaults["fused"]
    for _ in range(5):
        x = torch.randn(4, 6)
        for m, opt in ((model, ours), (reference, ref)):
            opt.zero_grad()
            m(x).square().sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
