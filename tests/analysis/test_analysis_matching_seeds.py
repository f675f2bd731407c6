"""Channels matched across seeds: Hungarian matching against a permutation null."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from kernelscope.analysis.atlas.templates import gabor_template
from kernelscope.analysis.matching_seeds import (
    activation_similarity,
    kernel_similarity,
    match_pair,
    match_seeds,
)
from kernelscope.errors import KernelscopeError


def _gabors(n):
    return np.stack([gabor_template((7, 7), frequency=0.2, theta=t, phase=0.0, sigma_u=1.5, sigma_v=1.5)
                     for t in np.linspace(0, np.pi, n, endpoint=False)])[:, None]


def test_similarities_against_numpy_references(rng):
    a, b = rng.standard_normal((5, 2, 3, 3)), rng.standard_normal((4, 2, 3, 3))
    ref = np.array([[np.dot(x.ravel(), y.ravel()) / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])
    np.testing.assert_allclose(kernel_similarity(a, b), ref)
    x, y = rng.standard_normal((6, 3, 4, 4)), rng.standard_normal((6, 2, 4, 4))
    ref = np.array([[np.corrcoef(x[:, i].ravel(), y[:, j].ravel())[0, 1] for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(activation_similarity(x, y), ref)


def test_a_permuted_copy_is_recovered_and_noise_is_not_matched(rng):
    a = _gabors(8) + 0.05 * rng.standard_normal((8, 1, 7, 7))
    perm = rng.permutation(8)
    m = match_pair(a, a[perm] + 0.05 * rng.standard_normal(a.shape), n_permutations=100)
    np.testing.assert_array_equal(perm[m.partner], np.arange(8))
    assert m.recurs.all() and m.null_p95 < 0.8
    noise = match_pair(a, rng.standard_normal((8, 1, 7, 7)), n_permutations=100)
    assert noise.recurs.sum() <= 1  # unrelated kernels: at the null's level (5% by chance)


def test_the_matching_is_the_optimal_assignment(rng):
    a, b = rng.standard_normal((6, 1, 5, 5)), rng.standard_normal((6, 1, 5, 5))
    m = match_pair(a, b, n_permutations=20)
    sim = kernel_similarity(a, b)
    rows, cols = linear_sum_assignment(-sim)
    assert np.sum(m.similarity) == pytest.approx(sim[rows, cols].sum())


def test_activation_matching_with_a_shuffled_image_null(rng):
    x = rng.standard_normal((40, 4, 5, 5))
    y = np.concatenate([x[:, [2, 0]] * 3.0 + 0.1 * rng.standard_normal((40, 2, 5, 5)),
                        rng.standard_normal((40, 2, 5, 5))], axis=1)  # channels 2, 0 reappear; 2 new ones
    m = match_pair(x, y, kind="activations", n_permutations=50)
    assert m.partner[2] == 0 and m.partner[0] == 1 and m.recurs[[0, 2]].all() and not m.recurs[[1, 3]].any()


def test_match_seeds_first_layer_and_deeper_layer(rng):
    torch.manual_seed(0)
    nets = []
    base = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.ReLU())
    for s in range(3):
        net = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.ReLU())
        net.load_state_dict(base.state_dict())
        with torch.no_grad():
            order = torch.tensor(np.roll(np.arange(4), s))
            net[0].weight.copy_(base[0].weight[order])
            net[0].bias.copy_(base[0].bias[order])
            net[2].weight.copy_(base[2].weight[:, order])
        nets.append(net.eval())
    first = match_seeds(nets, n_permutations=50)
    assert first.kind == "kernels" and first.in_every_seed.all() and first.fraction_in_every_seed == 1.0
    # seed 1's channel j is the reference's channel roll(0..3, 1)[j]
    np.testing.assert_array_equal(first.pairs[0].partner, np.argsort(np.roll(np.arange(4), 1)))
    # the deeper conv sees the same features in permuted order: the same outputs (read before the ReLU, so no
    # channel is dead), each matched with correlation 1
    images = rng.random((20, 1, 16, 16)).astype(np.float32)
    deeper = match_seeds(nets, layer="2", images=images, n_permutations=30, at="conv")
    assert deeper.kind == "activations" and deeper.in_every_seed.all()
    np.testing.assert_allclose(deeper.pairs[1].similarity, 1.0, atol=1e-5)
    assert "recur in all 2 other seeds" in first.summary_line()
    with pytest.raises(KernelscopeError, match="at least two networks"):
        match_seeds(nets[:1])
    with pytest.raises(KernelscopeError, match="at least 20"):
        match_pair(_gabors(2), _gabors(2), n_permutations=5)


def test_matched_kernels_figure_and_section(rng):
    from kernelscope.report.controls import controls_section, matched_kernels_figure

    a = _gabors(4)
    nets = []
    for s in range(3):
        net = nn.Sequential(nn.Conv2d(1, 4, 7))
        with torch.no_grad():
            net[0].weight.copy_(torch.tensor(a[np.roll(np.arange(4), s)] + 0.05 * rng.standard_normal(a.shape)))
        nets.append(net)
    m = match_seeds(nets, n_permutations=30)
    fig = matched_kernels_figure(m)
    assert len(fig.axes) == 4 * 3
    section = controls_section(matching=m)
    assert section.id == "controls" and any("recur in all 2 other seeds" in str(b) for b in section.body)
