"""Colour census of RGB kernels: known answers on hand-built kernels, thresholds from the nulls, integration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kernelscope.analysis.atlas import atlas
from kernelscope.analysis.atlas.colour import (
    COLOUR_CLASSES,
    COLOUR_THRESHOLD_NULLS,
    colour_census,
    colour_null_kernels,
    colour_stats,
)
from kernelscope.analysis.atlas.templates import gabor_template
from kernelscope.errors import KernelscopeError

N_NULL = 400


def _gauss(sigma, cy=0.0, cx=0.0, size=7):
    x = np.arange(size) - (size - 1) / 2
    return np.exp(-((x[:, None] - cy) ** 2 + (x[None, :] - cx) ** 2) / (2 * sigma**2))


def _layer(rng, noise=0.05):
    """16 unit-norm kernels with a known colour answer, plus a little noise (no plane exactly zero).

    0-7 grey Gabors (luminance), 8-11 red-minus-green Gabors, 12 red-minus-green blob,
    13 red-minus-blue blob (colour-opponent), 14 pure red blob, 15 pure blue blob (colour-blob).
    """
    kernels, answers = [], []
    for i, t in enumerate(np.linspace(0, np.pi, 8, endpoint=False)):
        g = gabor_template((7, 7), frequency=0.2 + 0.02 * (i % 3), theta=t, phase=0.7 * i, sigma_u=1.5, sigma_v=1.8)
        kernels.append([g, g, g])
        answers.append("luminance")
    for i, t in enumerate(np.linspace(0, np.pi, 4, endpoint=False) + 0.2):
        g = gabor_template((7, 7), frequency=0.22, theta=t, phase=1.1 * i, sigma_u=1.6, sigma_v=1.6)
        kernels.append([g, -g, 0 * g])
        answers.append("colour-opponent")
    b = [_gauss(1.2), _gauss(1.6, 0.5, -0.5), _gauss(1.0, -0.5, 0.5), _gauss(1.4, 0.3, 0.3)]
    kernels += [[b[0], -b[0], 0 * b[0]], [b[1], 0 * b[1], -b[1]], [b[2], 0 * b[2], 0 * b[2]],
                [0 * b[3], 0 * b[3], b[3]]]
    answers += ["colour-opponent", "colour-opponent", "colour-blob", "colour-blob"]
    k = np.asarray(kernels)  # (16, 3, 7, 7)
    k /= np.linalg.norm(k.reshape(len(k), -1), axis=1)[:, None, None, None]
    return k + noise * rng.standard_normal(k.shape) / np.sqrt(k[0].size), answers


def test_statistics_of_exact_kernels():
    g = gabor_template((7, 7), frequency=0.22, theta=0.4, phase=0.0, sigma_u=1.6, sigma_v=1.6)
    blob = _gauss(1.3)
    k = np.stack([[g, g, g], [g, -g, 0 * g], [g, g, -2 * g], [blob, 0 * blob, 0 * blob], 2.0 * np.stack([g, g, g])])
    s = colour_stats(k)
    np.testing.assert_allclose(s.rank1_fraction, 1.0)
    np.testing.assert_allclose(s.grey_angle, [0.0, 90.0, 90.0, np.degrees(np.arccos(1 / np.sqrt(3))), 0.0], atol=1e-6)
    np.testing.assert_allclose(s.balance, [0.0, 1.0, 2 / 3, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(s.colour_vector[1], [1 / np.sqrt(2), -1 / np.sqrt(2), 0.0], atol=1e-12)
    scores = s.scores()
    np.testing.assert_allclose(scores["luminance"], [1, 0, 0, 1 / 3, 1], atol=1e-12)
    np.testing.assert_allclose(scores["colour-opponent"], [0, 1, 2 / 3, 0, 0], atol=1e-12)
    np.testing.assert_allclose(scores["colour-blob"], [0, 0, 1 / 3, 2 / 3, 0], atol=1e-12)
    assert s.lowpass.tolist() == [False, False, False, True, False]
    dead = colour_stats(np.zeros((1, 3, 5, 5)))
    assert np.isnan(dead.rank1_fraction[0]) and np.isnan(dead.scores()["luminance"][0]) and not dead.lowpass[0]


def test_hand_built_kernels_get_their_colour_class(rng):
    kernels, answers = _layer(rng)
    census = colour_census(kernels, n_null=N_NULL)
    assert census.classes.tolist() == answers
    assert census.fractions["luminance"] == 0.5 and census.counts["colour-opponent"] == 6
    assert all(0 < t < 1 for t in census.thresholds.values())
    # margins are those of the winning class
    scores = census.stats.scores()
    for i, cls in enumerate(answers):
        t = census.thresholds[cls]
        assert census.margins[i] == pytest.approx((scores[cls][i] - t) / (1 - t))


def test_random_kernels_are_mixed_at_about_the_null_rate(rng):
    kernels = rng.standard_normal((300, 3, 7, 7))
    census = colour_census(kernels, n_null=1000)
    assert census.fractions["mixed/unexplained"] >= 0.94
    for cls in ("luminance", "colour-opponent", "colour-blob"):
        assert census.fractions[cls] <= 0.03
        # the independent random control (not the calibration draw) lands in the class at the same low rate
        assert census.control_fractions["random"][cls] <= 0.025
        assert abs(census.fractions[cls] - census.control_fractions["random"][cls]) <= 0.025


def test_thresholds_are_the_strictest_percentile_of_each_class_nulls(rng):
    kernels, _ = _layer(rng)
    census = colour_census(kernels, n_null=N_NULL, percentile=95)
    for cls, nulls in COLOUR_THRESHOLD_NULLS.items():
        expected = max(np.percentile(census.null_scores[n][cls], 95) for n in nulls if n in census.null_scores)
        assert census.thresholds[cls] == pytest.approx(expected)
        assert census.threshold_nulls[cls] == [n for n in nulls if n != "init"]
    assert census.calibration_sizes == {"random": N_NULL, "channel-mixed": N_NULL, "colour-shuffled": N_NULL,
                                        "recoloured": N_NULL}
    # the reported controls are an independent draw: same sizes, different kernels than the calibration
    one = colour_census(kernels, n_null=N_NULL, percentile=95)
    assert one.thresholds == census.thresholds  # seeded
    only_random = colour_census(kernels, n_null=N_NULL, threshold_nulls={"luminance": ("random",)})
    assert set(only_random.thresholds) == {"luminance"}
    assert only_random.thresholds["luminance"] == pytest.approx(np.percentile(census.null_scores["random"]["luminance"], 99))


def test_changing_the_null_changes_the_threshold_and_the_class(rng):
    kernels, answers = _layer(rng)
    plain = colour_census(kernels, n_null=N_NULL)
    assert "init" not in plain.control_fractions
    # an 'init' null made of grey kernels: greyness is no longer beyond chance
    grey_init = np.repeat(rng.standard_normal((400, 1, 7, 7)), 3, axis=1) + 0.01 * rng.standard_normal((400, 3, 7, 7))
    census = colour_census(kernels, n_null=N_NULL, init_null=grey_init)
    assert census.thresholds["luminance"] > 0.99 > plain.thresholds["luminance"]
    assert census.threshold_nulls["luminance"] == ["random", "channel-mixed", "init"]
    assert census.calibration_sizes["init"] == 200 and census.control_sizes["init"] == 200
    assert census.counts["luminance"] == 0 and plain.counts["luminance"] == 8
    assert census.control_fractions["init"]["luminance"] <= 0.05  # odd half, classified with the even half's p99
    # the colour classes keep their thresholds: a grey init does not make opponency chance-like
    assert census.thresholds["colour-opponent"] == plain.thresholds["colour-opponent"]
    # a small init null is reported, never calibrated
    small = colour_census(kernels, n_null=N_NULL, init_null=grey_init[:50])
    assert small.thresholds == plain.thresholds and small.control_sizes["init"] == 50
    assert any("init colour control has only 50" in n for n in small.notes)


def test_colour_nulls_destroy_colour_and_keep_space(rng):
    kernels, _ = _layer(rng)
    mixed = colour_null_kernels("channel-mixed", kernels, n=50, rng=1)
    for m in mixed:  # every plane is a plane of the layer in the same channel, from three different kernels
        sources = [[j for j in range(len(kernels)) if np.array_equal(m[c], kernels[j, c])] for c in range(3)]
        assert all(len(s) == 1 for s in sources) and len({s[0] for s in sources}) == 3
    shuffled = colour_null_kernels("colour-shuffled", kernels, n=32, rng=1)
    np.testing.assert_allclose(np.sort(shuffled, axis=1), np.sort(np.concatenate([kernels, kernels]), axis=1))
    recoloured = colour_null_kernels("recoloured", kernels, n=16, rng=1)
    factor = recoloured[:, :, 3, 3] / kernels[:, :, 3, 3]
    assert np.all((np.abs(factor) >= 0.5 - 1e-9) & (np.abs(factor) <= 2 + 1e-9))
    np.testing.assert_allclose(colour_stats(recoloured[:8]).rank1_fraction, 1.0, atol=0.02)  # grey Gabors stay rank 1
    assert np.array_equal(colour_null_kernels("channel-mixed", kernels, n=5, rng=3),
                          colour_null_kernels("channel-mixed", kernels, n=5, rng=3))
    # colour-shuffled is a no-op on exact grey kernels: that is why it sets no luminance threshold
    grey = np.repeat(kernels[:1, :1], 3, axis=1)
    assert np.array_equal(colour_null_kernels("colour-shuffled", grey, n=1), grey)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: colour_stats(np.zeros((2, 1, 5, 5))), r"RGB kernels of shape \(N, 3, kh, kw\), got shape \(2, 1, 5, 5\)"),
    (lambda: colour_null_kernels("chanel-mixed", np.zeros((2, 3, 5, 5))), r"did you mean 'channel-mixed'"),
    (lambda: colour_census(np.ones((2, 3, 5, 5)), threshold_nulls={"luminance": ("smooth",)}), r"colour null"),
    (lambda: colour_census(np.ones((2, 3, 5, 5)), threshold_nulls={"gabor": ("random",)}), r"colour class"),
    (lambda: colour_census(np.ones((2, 3, 5, 5)), init_null=np.ones((300, 3, 3, 3))), r"init_null kernels must"),
])
def test_errors_name_what_was_passed(call, message):
    with pytest.raises(KernelscopeError, match=message):
        call()


def test_atlas_of_an_rgb_layer_carries_the_census(rng):
    kernels, answers = _layer(rng)
    init_null = rng.standard_normal((300, 3, 7, 7))
    result = atlas(kernels, n_null=N_NULL, init_null=init_null)
    assert result.colour_classes == answers
    assert [r["colour_class"] for r in result.records] == answers
    assert list(result.records[0])[:3] == ["index", "class", "colour_class"]  # beside the spatial class
    assert result.records[8]["colour"]["grey_angle_deg"] == pytest.approx(90, abs=3)
    assert result.colour.control_sizes["init"] == 150 and result.colour.calibration_sizes["init"] == 150
    data = json.loads(result.to_json())
    assert data["colour"]["counts"]["colour-opponent"] == 6 and set(data["colour"]["fractions"]) == set(COLOUR_CLASSES)
    assert set(data["colour"]["control_fractions"]) == {"random", "channel-mixed", "colour-shuffled", "recoloured",
                                                        "init"}
    rows = result.to_csv().splitlines()
    header = rows[0].split(",")
    assert header[-11:-9] == ["colour_class", "colour_margin"] and rows[9].split(",")[header.index("colour_class")] \
        == "colour-opponent"
    table = result.summary_table()
    assert "colour (RGB) thresholds, p99" in table and "colour-blob" in table
    # the census does not touch the spatial atlas (its nulls have their own seeds)
    plain = atlas(kernels, n_null=N_NULL, init_null=init_null, colour=False)
    assert plain.colour is None and "colour" not in json.loads(plain.to_json())
    assert plain.thresholds == result.thresholds and plain.classes == result.classes
    assert plain.control_fractions == result.control_fractions


def test_grey_layers_carry_no_census(rng):
    result = atlas(rng.standard_normal((6, 1, 5, 5)), n_null=N_NULL)
    assert result.colour is None and result.colour_classes is None
    assert "colour_class" not in result.records[0] and set(result.records[0]["colour"]) == {"off_luminance",
                                                                                           "rank1_fraction"}
    assert "colour" not in json.loads(result.to_json()) and "colour (RGB)" not in result.summary_table()
    assert result.to_csv().splitlines()[0].endswith(",dead,flat,distance_from_init")


def test_colour_figure_draws_kernels_by_class_beside_the_controls(rng, tmp_path):
    from kernelscope.report.figures.atlas import atlas_figures, colour_census_figure
    from kernelscope.report.figures.common import save_figure

    kernels, answers = _layer(rng)
    result = atlas(kernels, n_null=100)
    fig = colour_census_figure(result, per_row=8)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == len(kernels) and all(ax.images[0].get_array().shape == (7, 7, 3) for ax in images)
    # grouped by colour class, in the order of COLOUR_CLASSES
    drawn = [int(ax.get_title()[1:]) for ax in images]
    assert [answers[i] for i in drawn] == sorted(answers, key=COLOUR_CLASSES.index)
    bars = [ax for ax in fig.axes if ax.patches][0]
    widths = [p.get_width() for p in bars.patches]
    groups = 1 + len(result.colour.control_fractions)
    assert widths[:groups] == [result.colour.fractions["luminance"]] + [
        d["luminance"] for d in result.colour.control_fractions.values()]
    assert "atlas_colour" in atlas_figures(result)
    save_figure(fig, tmp_path / "colour.png")
    grey = atlas(rng.standard_normal((4, 1, 5, 5)), n_null=50)
    assert "atlas_colour" not in atlas_figures(grey)
    with pytest.raises(KernelscopeError, match=r"needs an RGB layer \(C = 3\); this one has shape \(4, 1, 5, 5\)"):
        colour_census_figure(grey)


def test_a_network_trained_on_colour_photos_learns_colour_kernels():
    """A real check (~10 s): zoo 'large-kernel' with RGB input, trained 150 steps to tell four bundled colour
    photos (skimage astronaut, chelsea, coffee, rocket) apart from 16x16 patches, init x0.05 as in the
    'structure' recipe. Its first-layer kernels are colour kernels far beyond the init and random controls."""
    torch = pytest.importorskip("torch")
    data = pytest.importorskip("skimage.data")
    from torch import nn

    from kernelscope.analysis.atlas import atlas_of
    from kernelscope.models.zoo import build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    size, patches, labels = 16, [], []
    for label, image in enumerate([data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]):
        image = image.astype(np.float32) / 255  # (H, W, 3)
        for _ in range(200):
            y, x = rng.integers(0, image.shape[0] - size), rng.integers(0, image.shape[1] - size)
            patches.append(image[y : y + size, x : x + size].transpose(2, 0, 1))  # (3, 16, 16)
            labels.append(label)
    x_all = torch.tensor(np.stack(patches))  # (800, 3, 16, 16)
    x_all = (x_all - x_all.mean((0, 2, 3), keepdim=True)) / x_all.std((0, 2, 3), keepdim=True)
    y_all = torch.tensor(labels)
    net = build_model("large-kernel", in_channels=3, num_classes=4, input_size=(size, size))
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(0.05)
    before = atlas_of(net, n_null=200)
    optimiser = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
    for _ in range(150):
        batch = torch.randint(0, len(x_all), (32,))
        loss = nn.functional.cross_entropy(net(x_all[batch]), y_all[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = atlas_of(net, n_null=200)
    colour = after.colour
    learned = colour.fractions["colour-opponent"] + colour.fractions["colour-blob"]
    assert learned >= 0.5, "\n".join(colour.summary_lines())
    for control in ("random", "init", "colour-shuffled"):
        assert colour.control_fractions[control]["colour-opponent"] + colour.control_fractions[control][
            "colour-blob"] <= 0.03
    assert before.colour.fractions["mixed/unexplained"] >= 0.8  # the same kernels before training
