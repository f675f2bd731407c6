"""The results of the data-set passes show themselves in a notebook (kernelscope._display): a short repr
that says what they hold, and HTML with their headline numbers (and picture where they have one)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("_display_checks", Path(__file__).parents[1] / "test_display.py")
_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_checks)
check_display = _checks.check_display


@pytest.fixture(scope="module")
def tiny():
    """A seeded conv net with logits, bright-masked images, masks, dark OOD images, labels."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2)).eval()
    rng = np.random.default_rng(0)
    masks = np.zeros((24, 16, 16), dtype=bool)
    masks[np.arange(24), rng.integers(2, 12, 24), 4:7] = True
    images = (rng.random((24, 1, 16, 16)) + 1.5 * masks[:, None]).astype(np.float32)
    return net, images, masks, (rng.random((20, 1, 16, 16)) ** 3).astype(np.float32)


def test_top_patches_show_values_and_patches(tiny):
    from kernelscope.analysis.toppatches import top_patches

    net, images, _, _ = tiny
    result = top_patches(net, "3", images, k=3, batch_size=8)
    parsed = check_display(result, numbers=[float(result.values.max()), 24], picture=True)
    assert "top-3 patches of 5 channels of 4 (ReLU after conv 3) over 24 images" in repr(result)
    assert "channel" in " ".join(parsed.text)


def test_dissection_shows_detectors_beside_the_control(tiny):
    from kernelscope.analysis.dissect import dissect
    from kernelscope.models.init import reinitialised

    net, images, masks, _ = tiny
    result = dissect(net, "0", images, {"bar": masks}, n_permutations=3, batch_size=8,
                     init_model=reinitialised(net, seed=1))
    best = float(np.max(result.trained["concepts"]["bar"]["iou"]))
    check_display(result, numbers=[best], picture=False, max_repr=450)
    assert "(init " in repr(result)  # the control beside the count
    assert repr(result).startswith("<DissectResult: dissection of 1 (ReLU after conv 0): 4 channels x 1 concept(s)")


def test_shift_shows_counts_and_network_scores(tiny):
    from kernelscope.analysis.shift import shift

    net, images, _, ood = tiny
    result = shift(net, "3", images, ood, n_boot=30, batch_size=8)
    median = float(np.median(result.trained["channels"]["auroc"]))
    check_display(result, numbers=[median, result.trained["network"]["energy"]["auroc"]], picture=False)
    assert "quiet on OOD" in repr(result)


def test_parts_show_detectors_per_part(tiny):
    from kernelscope.analysis.parts import part_selectivity

    net, images, masks, _ = tiny
    result = part_selectivity(net, images, {"bar": masks}, layer="0", n_controls=2, n_boot=50, target=None)
    check_display(result, numbers=[result.channels], picture=False)
    assert "part selectivity of 1 (ReLU after conv 0): 4 channels, 24 images" in repr(result)


def test_templates_and_correlation_show_r2_and_templates(scale_run):
    from kernelscope.analysis.channel_correlation import TrainingCurve, correlation_of
    from kernelscope.sources import open_source

    run, images, _ = scale_run
    result = correlation_of(open_source(str(run)), layers=["features.0"], images=str(images), limit=40)
    templates = result.depth.trained["features.0"]
    check_display(result, numbers=[templates.median_r2], picture=True, max_repr=450)
    check_display(templates, numbers=[templates.median_r2], picture=True)
    check_display(result.depth, numbers=[templates.median_r2], picture=False)
    check_display(result.raw, numbers=[result.raw.medians()["rho_ncc"]], picture=False, max_repr=450)
    curve = TrainingCurve(["features.0"], [0, 1], np.array([[0.5], [0.75]]), np.array([[0.1], [0.2]]), "conv")
    check_display(curve, numbers=[0.75], picture=False)
