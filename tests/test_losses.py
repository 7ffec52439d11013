"""Loss functions against hand-computed values and naive Python loops."""

from __future__ import annotations

import math

import torch

from textreid import losses


def _norm(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def test_instance_loss_hand_computed() -> None:
    # columns of the projection are normalised: [[3, 0], [4, 2]] -> (0.6, 0.8), (0, 1)
    projection = torch.tensor([[3.0, 0.0], [4.0, 2.0]])
    img = torch.tensor([[1.0, 0.0]])  # logits (0.6, 0)
    txt = torch.tensor([[0.0, 2.0]])  # logits (1.6, 2)
    labels = torch.tensor([1])
    eps = 0.1
    # target = (1 - eps) * onehot + eps / C = (0.05, 0.95)
    lp_img = _log_softmax([0.6, 0.0])
    lp_txt = _log_softmax([1.6, 2.0])
    expected = -(0.05 * lp_img[0] + 0.95 * lp_img[1]) - (0.05 * lp_txt[0] + 0.95 * lp_txt[1])
    got = losses.instance_loss(projection, img, txt, labels, epsilon=eps)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    plain = -lp_img[1] - lp_txt[1]
    assert math.isclose(losses.instance_loss(projection, img, txt, labels, epsilon=0.0).item(), plain, rel_tol=1e-6)


def test_instance_loss_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    proj, img, txt = torch.randn(5, 7, generator=g), torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    labels = torch.tensor([0, 3, 3, 6])
    eps, num_classes = 0.1, 7
    cols = [_norm(proj[:, c].tolist()) for c in range(num_classes)]
    total = 0.0
    for emb in (img, txt):
        per = []
        for i in range(4):
            lp = _log_softmax([_dot(emb[i].tolist(), cols[c]) for c in range(num_classes)])
            tgt = [(1 - eps) * (c == labels[i]) + eps / num_classes for c in range(num_classes)]
            per.append(-sum(t * p for t, p in zip(tgt, lp, strict=True)))
        total += sum(per) / 4
    assert math.isclose(losses.instance_loss(proj, img, txt, labels, epsilon=eps).item(), total, rel_tol=1e-5)


def test_global_align_loss_naive_loop() -> None:
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    labels = torch.tensor([2, 2, 0, 1, 0])
    total = 0.0
    for i in range(5):
        for j in range(5):
            s = _dot(_norm(img[i].tolist()), _norm(txt[j].tolist()))
            if labels[i] == labels[j]:
                total += math.log(1 + math.exp(-10 * (s - 0.6)))
            else:
                total += math.log(1 + math.exp(40 * (s - 0.4)))
    expected = total * 2 / 5
    assert math.isclose(losses.global_align_loss(img, txt, labels).item(), expected, rel_tol=1e-5)


def test_global_align_loss_hand_value_and_stability() -> None:
    # identical unit vectors, one id: S = 1 everywhere -> 2/B * B^2 * log(1 + e^-4)
    e = torch.ones(3, 4)
    expected = 2 / 3 * 9 * math.log(1 + math.exp(-4))
    assert math.isclose(losses.global_align_loss(e, e, torch.zeros(3, dtype=torch.long)).item(), expected, rel_tol=1e-6)
    # all different ids with S = 1 would be log(1 + e^24) each: finite (softplus does not overflow)
    big = losses.global_align_loss(e, e, torch.arange(3), scale_neg=4000.0)
    assert torch.isfinite(big) and math.isclose(big.item(), 2 / 3 * (3 * math.log(1 + math.exp(-4)) + 6 * 2400), rel_tol=1e-5)


def test_infonce_loss_naive_with_filtering() -> None:
    g = torch.Generator().manual_seed(2)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    q_img, k_txt, q_txt, k_img = unit(3, 4), unit(3, 4), unit(3, 4), unit(3, 4)
    txt_queue, img_queue = unit(6, 4), unit(6, 4)
    keep = torch.tensor([True, False, True, True, False, True])
    t = 0.07

    def direction(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> float:
        total = 0.0
        for i in range(q.shape[0]):
            logits = [_dot(q[i].tolist(), k[i].tolist()) / t]
            logits += [_dot(q[i].tolist(), queue[j].tolist()) / t for j in range(queue.shape[0]) if keep[j]]
            total += -_log_softmax(logits)[0]
        return total / q.shape[0]

    expected = direction(q_img, k_txt, txt_queue) + direction(q_txt, k_img, img_queue)
    got = losses.infonce_loss(q_img, k_txt, txt_queue, q_txt, k_img, img_queue, temperature=t, neg_mask=keep)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)
    # no mask == dropping nothing; passing the filtered queues gives the same value as masking
    same = losses.infonce_loss(q_img, k_txt, txt_queue[keep], q_txt, k_img, img_queue[keep], temperature=t)
    assert math.isclose(same.item(), expected, rel_tol=1e-5)


def test_sdm_loss_naive_loop() -> None:
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    labels = torch.tensor([1, 0, 1, 2])
    temp, eps = 0.02, 1e-8
    sim = [[_dot(_norm(img[i].tolist()), _norm(txt[j].tolist())) for j in range(4)] for i in range(4)]
    total = 0.0
    for direction in ("i2t", "t2i"):
        acc = 0.0
        for i in range(4):
            row = [(sim[i][j] if direction == "i2t" else sim[j][i]) / temp for j in range(4)]
            lp = _log_softmax(row)
            n_pos = sum(int(labels[i] == labels[j]) for j in range(4))
            q = [int(labels[i] == labels[j]) / n_pos for j in range(4)]
            acc += sum(math.exp(lp[j]) * (lp[j] - math.log(q[j] + eps)) for j in range(4))
        total += acc / 4
    assert math.isclose(losses.sdm_loss(img, txt, labels, temperature=temp).item(), total, rel_tol=1e-4)


def test_itc_loss_hand_computed() -> None:
    # orthonormal pairs: S = identity, logits = I / T
    e = torch.eye(3)
    t = 0.5
    row = _log_softmax([2.0, 0.0, 0.0])
    assert math.isclose(losses.itc_loss(e, e, temperature=t).item(), -row[0], rel_tol=1e-6)
    # asymmetric case: average of the two directions
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # S = [[1, 0], [1, 0]]; i2t rows: [1, 0]/T, [1, 0]/T targets 0, 1; t2i rows: [1, 1]/T, [0, 0]/T
    i2t = -_log_softmax([2.0, 0.0])[0] - _log_softmax([2.0, 0.0])[1]
    t2i = -_log_softmax([2.0, 2.0])[0] - _log_softmax([0.0, 0.0])[1]
    expected = (i2t / 2 + t2i / 2) / 2
    assert math.isclose(losses.itc_loss(img, txt, temperature=t).item(), expected, rel_tol=1e-6)


def test_losses_run_in_float32_under_autocast() -> None:
    g = torch.Generator().manual_seed(4)
    img, txt = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    labels = torch.tensor([0, 1, 1, 2])
    plain = losses.global_align_loss(img, txt, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = losses.global_align_loss(img.bfloat16(), txt.bfloat16(), labels)
    assert mixed.dtype == torch.float32
    # only the bf16 rounding of the inputs differs, not the arithmetic of the loss
    expected = losses.global_align_loss(img.bfloat16().float(), txt.bfloat16().float(), labels)
    torch.testing.assert_close(mixed, expected)
    assert abs(mixed.item() - plain.item()) < 0.05 * plain.item()
