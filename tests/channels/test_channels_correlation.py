"""Does a channel measure correlation? Linear templates, raw vs normalised correlation, tuning curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.analysis.correlation import (
    layer_templates,
    linear_templates,
    normalised_cross_correlation,
    raw_vs_normalised,
)
from kernelscope.analysis.tuning import orientation_agreement, tuning_curves
from kernelscope.errors import KernelscopeError
from kernelscope.kernels import gabor_kernel


def _first_layer_net(seed: int = 0, in_channels: int = 1, k: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(in_channels, 4, k, padding=k // 2), nn.ReLU(),
                         nn.Conv2d(4, 3, 3, padding=1), nn.ReLU()).eval()


def assert_identity(templates: np.ndarray, bias: np.ndarray, r2: np.ndarray, conv: nn.Conv2d) -> None:
    """The first-layer identity: template == kernel, offset == bias, held-out R^2 == 1 (to 1e-6)."""
    kernel = conv.weight.detach().double().numpy()
    scale = np.abs(kernel).max()
    np.testing.assert_allclose(templates, kernel, atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(bias, conv.bias.detach().double().numpy(), atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(r2, 1.0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_first_layer_template_is_the_kernel(rng, in_channels):
    net = _first_layer_net(in_channels=in_channels)
    x = rng.normal(size=(60, in_channels, 12, 12)).astype(np.float32)
    result = linear_templates(net, "0", x, at="conv")
    assert_identity(result.templates, result.bias, result.r2, net[0])
    # the same statistics score the kernel itself at R^2 = 1 and the flipped kernel (true convolution) below
    kernel = net[0].weight.detach().double().numpy()
    np.testing.assert_allclose(result.score(kernel, net[0].bias.detach().numpy()), 1.0, atol=1e-6)
    assert np.all(result.score(kernel[:, :, ::-1, ::-1]) < 0.9)


def test_a_wrong_template_fails_the_identity(rng):
    """The identity test can fail: the flipped kernel, a shifted bias or a noisy template are refused."""
    net = _first_layer_net()
    x = rng.normal(size=(40, 1, 12, 12)).astype(np.float32)
    result = linear_templates(net, "0", x, at="conv")
    flipped = result.templates[:, :, ::-1, ::-1]
    with pytest.raises(AssertionError):
        assert_identity(flipped, result.bias, result.score(flipped), net[0])
    with pytest.raises(AssertionError):
        assert_identity(result.templates, result.bias + 0.01, result.r2, net[0])
    noisy = result.templates + 0.01 * rng.normal(size=result.templates.shape)
    with pytest.raises(AssertionError):
        assert_identity(noisy, result.bias, result.score(noisy, result.bias), net[0])


def test_r2_falls_after_the_relu_and_deeper(rng):
    net = _first_layer_net()
    x = rng.normal(size=(60, 1, 12, 12)).astype(np.float32)
    conv, act = (layer_templates(net, ["0", "2"], x, at=at) for at in ("conv", "activation"))
    assert conv["0"].median_r2 > 1 - 1e-9
    assert act["0"].median_r2 < 0.95  # ReLU(<w, p> + b) is not linear in p
    assert act["2"].read.startswith("3 (ReLU")
    assert act["2"].field_size == (7, 7) and act["2"].templates.shape == (3, 1, 7, 7)


def test_streaming_batches_give_the_same_fit_and_memory_does_not_grow(rng):
    net = _first_layer_net()
    x = rng.normal(size=(50, 1, 12, 12)).astype(np.float32)
    whole = linear_templates(net, "2", x, at="activation", batch_size=50)
    stream = linear_templates(net, "2", (x[i:i + 7] for i in range(0, 50, 7)), at="activation")
    np.testing.assert_allclose(stream.r2, whole.r2, atol=1e-9)
    np.testing.assert_allclose(stream.templates, whole.templates, atol=1e-7)
    d = int(np.prod(whole.templates.shape[1:]))
    assert whole._test[0].shape == (d + 1, d + 1)  # the statistics' size: (D+1)^2, whatever N


def test_large_fields_are_block_averaged(rng):
    net = _first_layer_net()
    x = rng.normal(size=(20, 1, 12, 12)).astype(np.float32)
    result = linear_templates(net, "2", x, at="conv", max_features=16)  # 7x7 = 49 values > 16: pooled 2x2
    assert result.pool == 2 and result.templates.shape == (3, 1, 4, 4)
    with pytest.raises(KernelscopeError, match="pooled"):
        result.score(result.templates)


def test_too_few_images_and_bad_options_are_refused(rng):
    net = _first_layer_net()
    with pytest.raises(KernelscopeError, match="at least 5 images"):
        linear_templates(net, "0", rng.normal(size=(3, 1, 8, 8)).astype(np.float32))
    with pytest.raises(KernelscopeError, match="positions must be >= 1"):
        linear_templates(net, "0", rng.normal(size=(8, 1, 8, 8)).astype(np.float32), positions=0)
    with pytest.raises(KernelscopeError, match="nope"):
        linear_templates(net, "nope", rng.normal(size=(8, 1, 8, 8)).astype(np.float32))


def test_normalised_cross_correlation_is_opencv_tm_ccoeff_normed():
    cv2 = pytest.importorskip("cv2")
    from skimage import data

    image = data.camera()[200:328, 200:328].astype(np.float32) / 255  # (128, 128), a real photograph
    template = image[40:51, 60:71].copy()  # an 11x11 patch of it
    ours = normalised_cross_correlation(image, template)
    theirs = cv2.matchTemplate(image, template, cv2.TM_CCOEFF_NORMED)
    assert ours.shape == theirs.shape == (118, 118)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)
    assert np.unravel_index(np.argmax(ours), ours.shape) == (40, 60)
    # a random template too, and a multi-channel layout (N, C, H, W) x (O, C, kh, kw)
    other = np.random.default_rng(1).normal(size=(11, 11)).astype(np.float32)
    np.testing.assert_allclose(normalised_cross_correlation(image, other),
                               cv2.matchTemplate(image, other, cv2.TM_CCOEFF_NORMED), atol=2e-4)
    stacked = normalised_cross_correlation(image[None, None], np.stack([template, other])[:, None])
    assert stacked.shape == (1, 2, 118, 118)


def test_raw_vs_normalised_one_pattern_at_many_contrasts(rng):
    """One 3x3 pattern at 40 contrasts, one unit per image: the activation ranks them by contrast exactly
    (rho(activation, |p|) = +-1) while NCC and cosine are the same for all (no ranking: NaN)."""
    net = _first_layer_net(k=3)
    pattern = rng.normal(size=(1, 1, 3, 3))
    contrast = rng.uniform(0.2, 3.0, size=40)[:, None, None, None]
    x = (pattern * contrast).astype(np.float32)  # (40, 1, 3, 3): the valid positions are the centre only
    result = raw_vs_normalised(net, "0", x, k=5)
    assert result.n_units == 40
    sign = np.sign(np.sum(net[0].weight.detach().numpy() * pattern, axis=(1, 2, 3)))
    np.testing.assert_allclose(result.rho_contrast, sign, atol=1e-12)
    assert np.all(np.isnan(result.rho_ncc)) and np.all(np.isnan(result.rho_cos))
    # a natural-ish image set: the numbers are correlations
    mixed = raw_vs_normalised(net, "0", rng.normal(size=(10, 1, 12, 12)).astype(np.float32))
    assert mixed.n_units == 10 * 10 * 10
    assert np.all(np.abs(mixed.rho_ncc) <= 1) and np.all(mixed.rho_cos > 0.5)  # ReLU-free conv: cos drives rank
    with pytest.raises(KernelscopeError, match="Conv2d"):
        raw_vs_normalised(net, "1", x)


class _Energy(nn.Module):
    """A complex-cell model: even and odd Gabor, squared and summed (phase-invariant energy)."""

    def __init__(self, theta: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 11, padding=5, bias=False)
        with torch.no_grad():
            for i, parity in enumerate(("even", "odd")):
                self.conv.weight[i, 0] = torch.tensor(gabor_kernel(frequency=0.15, theta=theta, parity=parity,
                                                                   size=11))
        self.energy = _Square()

    def forward(self, x):
        return self.energy(self.conv(x))


class _Square(nn.Module):
    def forward(self, x):
        return (x**2).sum(dim=1, keepdim=True)


def test_tuning_simple_vs_complex_and_orientation():
    simple = nn.Sequential(nn.Conv2d(1, 1, 11, padding=5), nn.ReLU()).eval()
    with torch.no_grad():
        simple[0].weight.copy_(torch.tensor(gabor_kernel(frequency=0.15, theta=np.pi / 2, size=11)))
        simple[0].bias.zero_()
    t = tuning_curves(simple, "0", (1, 33, 33), frequencies=[0.08, 0.15, 0.3])
    assert t.read == "1 (ReLU after conv 0)"
    assert np.isclose(np.degrees(t.preferred_orientation[0]), 90) and t.preferred_frequency[0] == 0.15
    assert t.f1_f0[0] > 1 and bool(t.simple[0]) and t.osi[0] > 0.5
    energy = _Energy(theta=np.pi / 6).eval()
    e = tuning_curves(energy, "energy", (1, 33, 33), frequencies=[0.08, 0.15, 0.3])
    assert np.isclose(np.degrees(e.preferred_orientation[0]), 30)
    assert e.f1_f0[0] < 0.2 and not bool(e.simple[0])  # phase-invariant: complex-cell-like


def test_orientation_agreement_with_gabor_kernels_and_its_chance():
    net = nn.Sequential(nn.Conv2d(1, 6, 9, padding=4), nn.ReLU()).eval()
    thetas = np.arange(6) * np.pi / 6
    with torch.no_grad():
        for i, th in enumerate(thetas):
            net[0].weight[i, 0] = torch.tensor(gabor_kernel(frequency=0.2, theta=th, sigma=2.0, size=9,
                                                            parity="odd"))
        net[0].bias.zero_()
    t = tuning_curves(net, "0", (1, 27, 27))
    agreement = orientation_agreement(net, "0", t)
    assert agreement["n"] == 6 and agreement["agreement"] == 1.0
    assert agreement["chance"] == pytest.approx(1 / 6)
    small = _first_layer_net(k=3)
    refused = orientation_agreement(small, "0", tuning_curves(small, "0", (1, 12, 12)))
    assert refused["agreement"] is None and "3x3" in refused["reason"]


@pytest.mark.slow
def test_cli_on_a_run(cli_runner, face_run, tmp_path):
    out = tmp_path / "corr"
    result = cli_runner("correlation", face_run, "--layer", "features.0", "--limit", "40", "--over-training",
                        "--epochs", "0,8", "--out", out)
    assert result.exit_code == 0, result.output
    assert "median R2" in result.output and "rho(activation, NCC)" in result.output
    import json

    data = json.loads((out / "correlation.json").read_text())
    assert [r["epoch"] for r in data["over_training"]["rows"]][::len(data["layers"])] == [0, 8]
    assert (out / "depth.png").stat().st_size > 0 and (out / "layers.csv").exists()
    from kernelscope.analysis.channel_correlation import correlation_of
    from kernelscope.report.correlation import correlation_section
    from kernelscope.sources import open_source

    section = correlation_section(correlation_of(open_source(face_run), layers=["features.0"], limit=20))
    assert "Does a channel measure correlation?" in section.to_html()


@pytest.mark.parametrize("args, message", [
    (["--layer", "nope"], "nope"),
    (["--limit", "2"], "--limit"),
    (["--epochs", "x"], "--epochs"),
    (["--epochs", "0"], "--epochs goes with --over-training"),
    (["--at", "middle"], "--at"),
])
def test_cli_bad_input_one_line_exit_2(cli_runner, face_run, tmp_path, args, message):
    result = cli_runner("correlation", face_run, *args, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "correlation.json").exists()


def test_cli_over_training_needs_a_run(cli_runner, tmp_path):
    result = cli_runner("correlation", "onet", "--over-training", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: --over-training needs a run directory as SOURCE; MTCNN ONet (pretrained) is not one")
