"""Feature visualisation and projections: known answers, a reference implementation (Captum), controls, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.analysis.hooks import count_hooks
from kernelscope.analysis.projection import METHODS, project_top_patches, unit_gradient
from kernelscope.analysis.toppatches import top_patches
from kernelscope.analysis.visualize import (
    COLOUR_SQRT,
    FourierImage,
    data_max,
    feature_visualization,
    fourier_scale,
    over_training,
    parse_channels,
    patch_stability,
    random_affine,
    render,
)
from kernelscope.errors import KernelscopeError


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(4, 3, 3),
                         nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()


@pytest.fixture
def data(rng):
    return rng.random((16, 1, 12, 12)).astype(np.float32)


# ---------------------------------------------------------------- the parameterisation and transforms


def test_fourier_scale_is_one_over_frequency():
    s = fourier_scale(8, 8)
    assert s.shape == (8, 5)
    assert s[0, 1] == pytest.approx(8.0)  # f = 1/8
    assert s[4, 4] == pytest.approx(1 / np.sqrt(0.5**2 + 0.5**2))
    assert s[0, 0] == pytest.approx(8.0)  # DC capped at 1 / (1/8)


def test_colour_matrix_has_unit_largest_column():
    assert np.linalg.norm(COLOUR_SQRT, axis=0).max() == pytest.approx(1.0)


def test_fourier_image_of_zero_spectrum_is_grey():
    image = FourierImage(2, 3, 6, 7)
    with torch.no_grad():
        image.param.zero_()
    assert torch.allclose(image(), torch.full((2, 3, 6, 7), 0.5))


def test_random_affine_fills_outside_with_fill():
    x = torch.ones(1, 1, 8, 8)
    moved = random_affine(x, shift=0, scale=0.0, degrees=0.0)
    assert torch.allclose(moved, x, atol=1e-5)
    shrunk = random_affine(x, shift=0, scale=0.5, degrees=45.0, fill=torch.tensor([0.25]),
                           generator=torch.Generator().manual_seed(3))
    corners = shrunk[0, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners < 1.0).any()  # rotation by up to 45 degrees brings fill into a corner
    assert float(shrunk.min()) >= 0.25 - 1e-5 and float(shrunk.max()) <= 1.0 + 1e-5


@pytest.mark.parametrize(("text", "n", "expected"), [("0-2", 4, [0, 1, 2]), ("3,1", 4, [3, 1]), (None, 2, [0, 1]),
                                                     ("1,1-2", 4, [1, 2])])
def test_parse_channels(text, n, expected):
    assert parse_channels(text, n) == expected


@pytest.mark.parametrize(("text", "match"), [("5", "out of range"), ("a", "look like"), ("3-1", "look like"),
                                             ("-1", "out of range")])
def test_parse_channels_refuses(text, match):
    with pytest.raises(KernelscopeError, match=match):
        parse_channels(text, 4)


# ---------------------------------------------------------------- the optimisation


def test_render_beats_the_data_on_a_linear_unit(data):
    """A one-layer edge detector read at its centre: the best image is known (1 left, 0 right: 3.0); the render
    must beat the data and not the optimum. (Its *mean* over positions telescopes to boundary terms: the
    channel objective's texture cannot reach a patch's maximum here.)"""
    net = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0, -1.0]] * 3).view(1, 1, 3, 3))
    out = render(net, "0", np.eye(1, dtype=np.float32), shape=(1, 12, 12), steps=60, lr=0.1, seed=0,
                 objective="neuron")
    best = data_max(net, "0", data, np.eye(1, dtype=np.float32), objective="neuron")
    assert out.reached[0] > best[0]
    assert out.reached[0] <= 3.0 + 1e-4  # the true optimum: three 1s and three 0s
    assert out.history[-1] > out.history[0]


def test_data_max_is_the_top_patch_value(data):
    net = small_net()
    net(torch.zeros(1, 1, 12, 12))  # materialise the lazy layer
    top = top_patches(net, "3", data, k=1)
    assert np.allclose(data_max(net, "3", data, np.eye(3, dtype=np.float32)), top.values[:, 0], atol=1e-5)


def test_feature_visualization_with_controls(data):
    net = small_net()
    net(torch.zeros(1, 1, 12, 12))
    init = small_net(seed=1)
    init(torch.zeros(1, 1, 12, 12))
    result = feature_visualization(net, "3", data, channels=[0, 2], steps=20, init_model=init, random_directions=2)
    assert result.images.shape == (2, 1, 12, 12)
    assert result.init_images.shape == (2, 1, 12, 12)
    assert result.random_reached.shape == (2,)
    ratio, init_ratio = result.ratio, result.init_ratio
    live = result.data_max > 0
    assert np.allclose(ratio[live], result.reached[live] / result.data_max[live])
    assert list(result.beats_init) == list(np.isfinite(ratio) & ((ratio > init_ratio) | ~np.isfinite(init_ratio)))
    d = result.to_dict()
    assert [u["channel"] for u in d["units"]] == [0, 2]
    assert d["summary"]["units"] == 2
    assert count_hooks(net) == 0 and count_hooks(init) == 0


def test_neuron_and_direction_objectives(data):
    net = small_net()
    net(torch.zeros(1, 1, 12, 12))
    for objective in ("neuron", "direction"):
        result = feature_visualization(net, "0", data, channels=[1], steps=5, objective=objective,
                                       random_directions=1)
        assert result.objective == objective and result.images.shape == (1, 1, 12, 12)


def test_diversity_renders_several_images_per_unit(data):
    net = small_net()
    net(torch.zeros(1, 1, 12, 12))
    result = feature_visualization(net, "0", data, channels=[0, 1], steps=5, per_unit=3, diversity=1.0,
                                   random_directions=1)
    assert result.images.shape == (6, 1, 12, 12) and result.channels == [0, 0, 0, 1, 1, 1]
    assert not np.allclose(result.images[0], result.images[1])


def test_rgb_with_normalisation(rng):
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()).eval()
    images = rng.random((4, 3, 10, 10)).astype(np.float32)
    result = feature_visualization(net, "0", images, steps=3, mean=[0.5] * 3, std=[0.25] * 3, random_directions=0)
    assert result.images.shape == (2, 3, 10, 10) and result.settings["decorrelate"]


def test_hooks_removed_after_a_failure(data):
    net = small_net()
    net(torch.zeros(1, 1, 12, 12))
    with pytest.raises(KernelscopeError, match="channels"):
        render(net, "3", np.eye(5, dtype=np.float32), shape=(1, 12, 12), steps=2)
    assert count_hooks(net) == 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layer": "1"}, "not a Conv2d"),
    ({"layer": "nope"}, "layer"),
    ({"channels": [7]}, "out of range"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"objective": "class"}, "objective must be one of"),
])
def test_bad_input_is_one_line(data, kwargs, match):
    net = small_net()
    net(torch.zeros(1, 1, 12, 12))
    args = {"layer": "0", **kwargs}
    with pytest.raises(KernelscopeError, match=match):
        feature_visualization(net, args.pop("layer"), data, **args)


def test_model_without_gradients_is_refused(data):
    class NoGrad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            with torch.no_grad():
                return self.conv(x)

    with pytest.raises(KernelscopeError, match="no gradient"):
        render(NoGrad(), "conv", np.eye(2, dtype=np.float32), shape=(1, 12, 12), steps=1)


# ---------------------------------------------------------------- projections


def hand_net() -> nn.Module:
    """x -> conv1 (3 channels: 1x, -1x, 0.5x) -> ReLU -> conv2 (1, 1, -1) -> out; x = 2 gives pre-activations
    (2, -2, 1): plain gradient 1 - 0.5 = 0.5; guided max((1, 1, -1), 0) * (1, 0, 1) -> 1;
    deconvnet max((1, 1, -1), 0) -> 1 - 1 + 0 = 0."""
    net = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(3, 1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1, 1))
        net[2].weight.copy_(torch.tensor([1.0, 1.0, -1.0]).view(1, 3, 1, 1))
    return net.eval()


@pytest.mark.parametrize(("method", "expected"), [("gradient", 0.5), ("guided", 1.0), ("deconvnet", 0.0)])
def test_projection_rules_by_hand(method, expected):
    x = np.full((1, 1, 1, 1), 2.0, np.float32)
    grad = unit_gradient(hand_net(), "2", x, np.array([[0, 0, 0]]), method=method, at="conv")
    assert float(grad.squeeze()) == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
@pytest.mark.parametrize("method", ["guided", "deconvnet"])
def test_projection_matches_captum(method, rng):
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 3, 3), nn.ReLU()).eval()
    with torch.no_grad():
        body[3].bias.fill_(0.2)  # most units above zero: their guided projections are not all zero

    class Unit(nn.Module):  # Captum attributes a model output: the unit (c, y, x) of the layer
        def __init__(self, c, y, x):
            super().__init__()
            self.body, self.c, self.y, self.x = body, c, y, x

        def forward(self, inputs):
            return self.body(inputs)[:, self.c, self.y, self.x]

    x = rng.random((1, 1, 14, 14)).astype(np.float32)
    nonzero = 0
    for unit in ([0, 1, 2], [2, 3, 0], [1, 0, 0], [2, 1, 1]):
        ours = unit_gradient(body, "3", x, np.array([unit]), method=method, at="activation")
        cls = captum_attr.GuidedBackprop if method == "guided" else captum_attr.Deconvolution
        theirs = cls(Unit(*unit)).attribute(torch.from_numpy(x).requires_grad_(True)).detach().numpy()
        assert np.allclose(ours, theirs, atol=1e-6), (method, unit)
        nonzero += bool(np.abs(theirs).sum() > 0)
    assert nonzero >= 1  # not only units whose projection is zero
    assert count_hooks(body) == 0


def test_project_top_patches_crops_like_the_patches(data):
    net = small_net()
    net(torch.zeros(1, 1, 12, 12))
    top = top_patches(net, "3", data, k=2)
    result = project_top_patches(net, "3", data, top, method="guided", channels=[1, 2])
    assert result.crops.shape == (2, 2, *top.crops.shape[2:])
    assert result.relus_overridden == 2
    assert count_hooks(net) == 0


def test_projection_hooks_removed_after_failure(data):
    net = hand_net()
    with pytest.raises(KernelscopeError, match="units must have shape"):
        unit_gradient(net, "2", np.zeros((2, 1, 1, 1), np.float32), np.array([[0, 0, 0]]), method="guided")
    assert count_hooks(net) == 0
    with pytest.raises(KernelscopeError, match="method must be"):
        unit_gradient(net, "2", np.zeros((1, 1, 1, 1), np.float32), np.array([[0, 0, 0]]), method="x")
    assert set(METHODS) == {"gradient", "guided", "deconvnet"}


# ---------------------------------------------------------------- what is optimised is what is measured


def centre_surround_net() -> nn.Module:
    """One 3x3 zero-sum centre-surround channel, circular padding: its spatial max is 1 for a white pixel on black,
    and its mean over positions is 0 for every image (each pixel meets every weight once), so only a max objective
    can find the 1."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular", bias=False), nn.ReLU()).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]) / 8)
    return net


def test_max_objective_finds_the_spatial_max_that_the_mean_misses():
    net = centre_surround_net()
    kwargs = dict(shape=(1, 12, 12), steps=60, lr=0.2, transforms=False, fourier=False)
    best = render(net, "0", np.ones((1, 1), np.float32), reduce="max", **kwargs).reached[0]
    texture = render(net, "0", np.ones((1, 1), np.float32), reduce="mean", **kwargs).reached[0]
    assert best > 0.8  # the optimum is 1: a white pixel on black
    assert texture < 0.1  # no gradient: the start image (grey plus noise of sd 0.01)


def test_render_starts_at_the_start_colour():
    image = FourierImage(2, 3, 5, 5, start=[0.1, 0.5, 0.9])
    with torch.no_grad():
        image.param.zero_()
    colours = image()[0, :, 0, 0]
    np.testing.assert_allclose(colours.detach().numpy(), [0.1, 0.5, 0.9], atol=1e-6)


def test_starts_keep_the_best_image_with_its_own_value(data):
    net = small_net()
    done = render(net, "3", np.eye(3, dtype=np.float32), shape=(1, 12, 12), steps=6, starts=3, seed=1)
    assert done.images.shape == (3, 1, 12, 12) and done.reached.shape == (3,)
    again = data_max(net, "3", done.images, np.eye(3, dtype=np.float32))  # images in [0, 1], no normalisation
    np.testing.assert_allclose(np.diag(again) if again.ndim == 2 else again, done.reached, rtol=1e-5)


def test_ratio_definition_is_stated(data):
    result = feature_visualization(small_net(), "3", data, steps=2, random_directions=1, k=2)
    text = result.to_dict()["ratio_definition"]
    assert text.startswith("ratio = activation the render reaches / the data-set maximum, both read at 4 (ReLU")
    assert "spatial max" in text and result.settings["reduce"] == "max"
    neuron = feature_visualization(small_net(), "3", data, steps=2, random_directions=1, k=2, objective="neuron")
    assert "the centre position" in neuron.ratio_definition


@pytest.mark.parametrize(("kwargs", "match"), [({"starts": 0}, "starts must be >= 1"),
                                               ({"reduce": "median"}, "reduce must be 'max' or 'mean'")])
def test_bad_render_settings(data, kwargs, match):
    with pytest.raises(KernelscopeError, match=match):
        render(small_net(), "3", np.eye(3, dtype=np.float32), shape=(1, 12, 12), steps=2, **kwargs)


# ---------------------------------------------------------------- stability over training (a run-like object)


class _Epochs:
    """A run directory's interface for the over-training functions: ``checkpoint_epochs`` and ``model(epoch)``."""

    def __init__(self, models):
        self.models = models
        self.checkpoint_epochs = list(range(len(models)))

    def model(self, epoch):
        return self.models[epoch]


def test_patch_stability_known_answers(data):
    same = small_net(0)
    unchanged = patch_stability(_Epochs([same, same, same]), data, k=3)
    assert unchanged.layers == ["0", "3"]
    assert all(v == [1.0, 1.0, 1.0] for v in unchanged.jaccard.values())
    assert unchanged.settled == {"0": 0, "3": 0}
    changed = patch_stability(_Epochs([small_net(5), same, same]), data, k=3)
    for layer in changed.layers:
        assert changed.jaccard[layer][1:] == [1.0, 1.0] and changed.jaccard[layer][0] < 1.0
    assert changed.to_dict()["chance"] == 3 / len(data)


def test_over_training_renders_every_epoch(data):
    evolution = over_training(_Epochs([small_net(5), small_net(0)]), "3", data, channels=[0, 2], steps=3)
    assert evolution.epochs == [0, 1] and evolution.channels == [0, 2]
    assert [im.shape for im in evolution.images] == [(2, 1, 12, 12)] * 2
    assert evolution.to_dict()["ratios"][0] == [None if not np.isfinite(v) else v for v in evolution.ratios[0]]


def test_over_training_without_checkpoints_is_one_line(data):
    with pytest.raises(KernelscopeError, match=r"^the run has no checkpoints"):
        over_training(_Epochs([]), "3", data)
    with pytest.raises(KernelscopeError, match=r"^the run has no checkpoints"):
        patch_stability(_Epochs([]), data)


# ---------------------------------------------------------------- notebook display (issue 20)


def test_results_show_themselves_in_a_notebook(data):
    net = small_net()
    result = feature_visualization(net, "3", data, steps=2, random_directions=1, k=2, init_model=small_net(1))
    line = repr(result)
    assert line.startswith("<Visualization: feature visualisation of 4 (ReLU after conv 3): 3 unit(s), channel")
    assert f"median ratio {result.summary()['median_ratio']:.3g}"[:16] in line and "\n" not in line
    html = result._repr_html_()
    assert "<img" in html and "ratio = activation the render reaches" in html and html.count("<tr") >= 3
    projections = project_top_patches(net, "3", data, result.top, method="guided")
    assert repr(projections).startswith("<Projections: guided projections of 3: 3 channel(s) x 2 top patches")
    assert "<img" in projections._repr_html_()
    evolution = over_training(_Epochs([small_net(5), net]), "3", data, channels=[0], steps=2)
    assert repr(evolution).startswith("<Evolution: renders of 3 over training: 1 channel(s), 2 epochs")
    stability = patch_stability(_Epochs([small_net(5), net]), data, k=2)
    assert "3 stable from epoch" in repr(stability) and "<table" in stability._repr_html_()
