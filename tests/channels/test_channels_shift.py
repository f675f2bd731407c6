"""Distribution shift: AUROC, intervals, FPR and Mahalanobis against references; honest errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis
from sklearn.metrics import roc_auc_score
from torch import nn

from kernelscope.analysis.shift import (
    _mahalanobis_score,
    auroc,
    bootstrap_auroc,
    fpr_at_tpr,
    mahalanobis_fit,
    shift,
)
from kernelscope.errors import KernelscopeError


def test_auroc_matches_sklearn_with_ties(rng):
    pos = rng.integers(0, 5, (40, 3)).astype(float)
    neg = rng.integers(0, 4, (30, 3)).astype(float)
    labels = np.r_[np.ones(40), np.zeros(30)]
    expected = [roc_auc_score(labels, np.r_[pos[:, c], neg[:, c]]) for c in range(3)]
    np.testing.assert_allclose(auroc(pos, neg), expected)


def test_bootstrap_interval_covers_the_truth_and_shrinks_with_data(rng):
    # N(1, 1) vs N(0, 1): true AUROC = Phi(1 / sqrt 2) = 0.7602
    small = bootstrap_auroc(rng.normal(1, 1, 50), rng.normal(0, 1, 50), n_boot=300)
    large = bootstrap_auroc(rng.normal(1, 1, 800), rng.normal(0, 1, 800), n_boot=300)
    assert small[0] < 0.7602 < small[1] and large[0] < 0.7602 < large[1]
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])


def test_fpr_at_95_tpr_by_brute_force(rng):
    scores_in, scores_out = rng.normal(2, 1, 200), rng.normal(0, 1, 300)
    threshold = np.sort(scores_in)[10]  # 190 of 200 ID scores (95%) are >= it
    assert (scores_in >= threshold).mean() == 0.95
    assert fpr_at_tpr(scores_in, scores_out) == (scores_out >= threshold).mean()


def test_mahalanobis_matches_scipy(rng):
    features = np.r_[rng.normal(0, 1, (60, 3)), rng.normal(4, 1, (60, 3))]
    labels = np.r_[np.zeros(60, int), np.ones(60, int)]
    means, precision = mahalanobis_fit(features, labels, ridge=0.0)
    queries = rng.normal(2, 2, (5, 3))
    expected = [-min(mahalanobis(q, m, precision) ** 2 for m in means) for q in queries]
    np.testing.assert_allclose(_mahalanobis_score(queries, means, precision), expected)


def _two_channel_net():
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():  # ch 0 likes bright, ch 1 likes dark, ch 2 ignores the image
        net[0].weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1))
        net[0].bias.zero_()
    return net


def test_quiet_and_louder_channels_and_network_scores(rng):
    bright = rng.uniform(0.5, 1.0, (40, 1, 5, 5)).astype(np.float32)
    dark = rng.uniform(0.0, 0.5, (40, 1, 5, 5)).astype(np.float32)
    result = shift(_two_channel_net(), "0", bright, dark, train_images=bright,
                   train_labels=np.repeat([0, 1], 20), n_boot=200)
    t = result.trained
    assert t["quiet_on_ood"] == [0] and t["fire_more_on_ood"] == [1]
    channels = t["channels"]
    assert channels["auroc"][0] == 1.0 and channels["auroc"][1] == 0.0 and channels["auroc"][2] == 0.5
    assert channels["rate_in"][0] == pytest.approx(0.05) and channels["rate_out"][0] == 0.0
    assert channels["rate_out"][1] == 1.0
    # logits = the 3 channel means: max logit is ch 0 on bright images (high), ch 1 on dark ones (high too)
    assert set(t["network"]) == {"max_softmax", "max_logit", "energy", "mahalanobis"}
    for score in t["network"].values():
        assert 0.0 <= score["auroc"] <= 1.0 and 0.0 <= score["fpr_at_95_tpr"] <= 1.0
    assert t["network"]["mahalanobis"]["auroc"] > 0.9  # dark images are far from the bright classes
    rows = result.rows()
    assert [r["verdict"] for r in rows] == ["quiet on OOD", "fires more on OOD", "no clear change"]


def test_init_control_and_missing_training_data(rng):
    x_in = rng.uniform(0.5, 1.0, (20, 1, 5, 5))
    x_out = rng.uniform(0.0, 0.5, (20, 1, 5, 5))
    torch.manual_seed(0)
    result = shift(_two_channel_net(), "0", x_in, x_out, init_model=nn.Sequential(nn.Conv2d(1, 3, 1)), n_boot=50)
    assert result.init is not None and "mahalanobis" not in result.trained["network"]
    assert any("Mahalanobis score skipped" in note for note in result.trained["notes"])
    assert any("not (N, classes) logits" in note for note in result.init["notes"])  # a 4-D output


def test_identical_and_subset_ood_sets_are_refused(rng):
    x = rng.random((10, 1, 4, 4)).astype(np.float32)
    net = _two_channel_net()
    with pytest.raises(KernelscopeError, match=r"^the out-of-distribution set is identical to the in-distribution "
                                               r"set \(all 10 images also occur in it\); give different data$"):
        shift(net, "0", x, x.copy())
    with pytest.raises(KernelscopeError, match=r"^the out-of-distribution set is a subset of"):
        shift(net, "0", x, x[:4])
    with pytest.raises(KernelscopeError, match=r"^the out-of-distribution set has no images \(0 given\)"):
        shift(net, "0", x, x[:0])
    with pytest.raises(KernelscopeError, match=r"^unknown layer 'conv'"):
        shift(net, "conv", x, x + 1)


def test_a_model_whose_output_is_not_logits_gets_no_softmax_scores(rng):
    """A descriptor network (dlib's face ResNet) has no classes: MSP, max logit and energy would be meaningless."""
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    x_in, x_out = rng.uniform(0.5, 1, (20, 1, 6, 6)), rng.uniform(0, 0.5, (20, 1, 6, 6))
    with_scores = shift(net, "0", x_in, x_out, n_boot=50)
    without = shift(net, "0", x_in, x_out, n_boot=50, logits=False)
    assert set(with_scores.trained["network"]) == {"max_softmax", "max_logit", "energy"}
    assert without.trained["network"] == {}
    assert any("not (N, classes) logits" in note for note in without.trained["notes"])
    np.testing.assert_array_equal(with_scores.trained["channels"]["auroc"], without.trained["channels"]["auroc"])
