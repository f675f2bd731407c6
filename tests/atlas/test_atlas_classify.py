"""The atlas on kernels with a known answer: positive controls come back, random kernels do not."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from skimage.filters import gabor_kernel as skimage_gabor

from kernelscope.analysis.atlas import CLASSES, atlas
from kernelscope.analysis.atlas.templates import gabor_template
from kernelscope.errors import KernelscopeError

N_NULL = 200  # enough for a p99 in tests (3 kernels above it); the default is larger


def _gabors(size, rng, n=12):
    """Gabors at random orientations, phases and centre shifts: (n, size, size), plus their thetas."""
    thetas = rng.uniform(0, np.pi, n)
    kernels = [gabor_template((size, size), frequency=rng.uniform(0.18, 0.3), theta=t,
                              phase=rng.uniform(-np.pi, np.pi), sigma_u=size / 4.5, sigma_v=size / 4.0,
                              centre=tuple(rng.uniform(-1, 1, 2))) for t in thetas]
    return np.stack(kernels), thetas


@pytest.mark.parametrize("size", [7, 11])
def test_rotated_shifted_gabors_are_gabor_like_with_the_right_orientation(size, rng):
    kernels, thetas = _gabors(size, rng)
    result = atlas(kernels, n_null=N_NULL)
    assert result.classes == ["gabor-like"] * len(kernels)
    fits = [r["gabor_fit"] for r in result.records]
    assert all(f["r2"] > 0.999 for f in fits)
    errors = np.mod(np.radians([f["theta_deg"] for f in fits]) - thetas, np.pi)
    assert np.all(np.minimum(errors, np.pi - errors) < 0.03)
    # random kernels of the same shape are not: at most a few percent, as the p99 threshold allows
    assert result.control_fractions["random"]["gabor-like"] <= 0.03


def test_bank_and_skimage_gabors_are_gabor_like():
    from kernelscope.kernels import gabor_kernel

    bank = [gabor_kernel(frequency=0.25, theta=t, phase=p, size=9) for t in (0.3, 1.3, 2.3) for p in (0.0, -1.0)]
    ski = []
    for t in (0.2, 0.9, 1.7, 2.6):
        g = np.real(skimage_gabor(frequency=0.2, theta=t, sigma_x=2.0, sigma_y=2.0))
        c = g.shape[0] // 2
        ski.append(g[c - 4 : c + 5, c - 4 : c + 5])
    result = atlas(np.stack(bank + ski), n_null=N_NULL)
    assert result.counts["gabor-like"] == 10, result.classes


def test_random_kernels_are_unexplained(rng):
    result = atlas(rng.standard_normal((64, 1, 7, 7)), n_null=N_NULL)
    assert result.fractions["unexplained"] >= 0.85
    assert result.fractions["gabor-like"] <= 0.06


def test_edges_centre_surround_and_blobs_get_their_class(rng):
    y, x = np.mgrid[-3:4, -3:4].astype(float)
    edges, dogs, blobs = [], [], []
    for i, theta in enumerate(np.linspace(0, np.pi, 4, endpoint=False)):
        u = (x - 0.5 * (i % 2)) * np.cos(theta) + y * np.sin(theta)
        edges.append(-u * np.exp(-(x**2 + y**2) / (2 * 1.3**2)))
        r2 = (x - (i % 2)) ** 2 + (y + (i // 2)) ** 2
        dogs.append(np.exp(-r2 / (2 * 0.9**2)) - 0.35 * np.exp(-r2 / (2 * 2.0**2)))
        blobs.append(np.exp(-r2 / (2 * (1.2 + 0.3 * i) ** 2)))
    result = atlas(np.stack(edges + dogs + blobs), n_null=N_NULL)
    assert result.classes == ["edge-like"] * 4 + ["centre-surround"] * 4 + ["blob/low-pass"] * 4


def test_dead_kernel_is_degenerate_and_never_classified(rng):
    kernels, _ = _gabors(7, rng, n=4)
    kernels[2] = 0.0
    result = atlas(kernels, n_null=N_NULL)
    assert result.classes[2] == "degenerate" and result.records[2]["quality"]["dead"]
    assert result.classes.count("gabor-like") == 3


def test_kernels_learned_without_labels_from_natural_images_are_mostly_gabor_like():
    """Second positive control: ICA of whitened natural-image patches (the sparse-coding experiment)."""
    from skimage import color, data
    from sklearn.decomposition import FastICA

    rng = np.random.default_rng(0)
    images = [data.camera(), color.rgb2gray(data.astronaut()), color.rgb2gray(data.coffee()),
              color.rgb2gray(data.chelsea())]
    patches = []
    for image in images:
        image = (image - image.mean()) / image.std()
        ys = rng.integers(0, image.shape[0] - 7, 1500)
        xs = rng.integers(0, image.shape[1] - 7, 1500)
        patches.append(np.stack([image[y : y + 7, x : x + 7].ravel() for y, x in zip(ys, xs, strict=True)]))
    patches = np.concatenate(patches)
    patches -= patches.mean(axis=1, keepdims=True)
    ica = FastICA(n_components=24, whiten="unit-variance", random_state=0, max_iter=200, tol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastICA's convergence chatter is not under test
        ica.fit(patches)
    filters = ica.components_.reshape(-1, 1, 7, 7)
    result = atlas(filters, n_null=N_NULL)
    # measured: 22 of 24 (0.92) Gabor-like; random kernels of the same shape: 0-1%
    assert result.fractions["gabor-like"] >= 0.7, result.summary_table()
    random = atlas(np.random.default_rng(1).standard_normal(filters.shape), n_null=N_NULL)
    assert random.fractions["gabor-like"] < 0.1
    # the pixel-shuffled ICA filters (same values, no arrangement) are not Gabor-like either
    assert result.control_fractions["shuffled"]["gabor-like"] < 0.05


def test_3x3_kernels_say_gabor_is_not_identifiable(rng):
    result = atlas(rng.standard_normal((8, 1, 3, 3)), n_null=N_NULL)
    assert "gabor" not in result.thresholds
    assert result.counts["gabor-like"] == 0
    assert any("Gabor-likeness is not identifiable for 3x3" in n for n in result.notes)
    assert not any(line.startswith("gabor-like") for line in result.summary_table().splitlines())
    assert all(r["gabor_fit"] is None for r in result.records)
    # random 3x3 kernels match the bank well: the thresholds say so
    assert result.thresholds["edge"] > 0.85


def test_thresholds_are_the_strictest_null_percentile(rng):
    kernels, _ = _gabors(7, rng, n=6)
    result = atlas(kernels, n_null=N_NULL, percentile=95, threshold_nulls=("random", "shuffled"))
    for score, value in result.thresholds.items():
        assert value == pytest.approx(max(result.null_percentiles[n][score] for n in ("random", "shuffled")))
    # a null that sets the thresholds can put at most 5% (+ one kernel of rounding) into any class
    for null in result.threshold_nulls:
        for cls in ("edge-like", "gabor-like", "centre-surround", "blob/low-pass"):
            assert result.control_fractions[null][cls] <= 0.05 + 1 / N_NULL, (null, cls)
    # with the smooth null in the thresholds, every threshold is at least as strict (drawn though not listed)
    strict = atlas(kernels, n_null=N_NULL, percentile=95, nulls=("random",),
                   threshold_nulls=("random", "shuffled", "smooth"))
    assert strict.threshold_nulls == ["random", "shuffled", "smooth"]
    assert all(strict.thresholds[k] >= result.thresholds[k] for k in result.thresholds)


def test_init_control_and_distance_from_init(rng):
    init = rng.standard_normal((8, 1, 7, 7))
    learned, _ = _gabors(7, rng, n=8)
    learned = learned[:, None] + 0.05 * init
    result = atlas(learned, init_kernels=init, n_null=N_NULL)
    assert result.control_sizes["init"] == 8
    assert any("init control has only 8 kernels" in n for n in result.notes)
    assert "init" not in result.threshold_nulls
    assert result.control_fractions["init"]["gabor-like"] <= 0.125
    expected = np.linalg.norm((learned - init).reshape(8, -1), axis=1) / np.linalg.norm(init.reshape(8, -1), axis=1)
    np.testing.assert_allclose([r["init"]["distance"] for r in result.records], expected, rtol=1e-9)
    big = atlas(learned, init_kernels=init, init_null=rng.standard_normal((200, 1, 7, 7)), n_null=N_NULL)
    # 200 initial kernels and no init_control: even ones calibrate, odd ones are the reported control
    assert "init" in big.threshold_nulls and big.calibration_sizes["init"] == 100 and big.control_sizes["init"] == 100
    apart = atlas(learned, init_null=rng.standard_normal((200, 1, 7, 7)),
                  init_control=rng.standard_normal((150, 1, 7, 7)), n_null=N_NULL, surrogates=0)
    assert apart.calibration_sizes["init"] == 200 and apart.control_sizes["init"] == 150


def test_rgb_kernels_report_colour(rng):
    g = gabor_template((7, 7), frequency=0.25, theta=1.0, phase=0.0, sigma_u=1.6, sigma_v=1.6)
    luminance = np.stack([g, g, g])
    opponent = np.stack([g, -g, 0 * g])
    result = atlas(np.stack([luminance, opponent]), n_null=N_NULL)
    assert result.classes == ["gabor-like", "gabor-like"]
    off = [r["colour"]["off_luminance"] for r in result.records]
    assert off[0] == pytest.approx(0.0, abs=1e-9) and off[1] == pytest.approx(1.0)


def test_outputs_json_csv_and_table(rng):
    kernels, _ = _gabors(7, rng, n=5)
    result = atlas(kernels, n_null=N_NULL, layer="features.0", epoch=3)
    data = json.loads(result.to_json())
    assert data["format"] == "kernelscope-atlas" and data["layer"] == "features.0" and data["epoch"] == 3
    assert data["counts"]["gabor-like"] == 5 and set(data["counts"]) == set(CLASSES)
    assert set(data["control_fractions"]) == {"random", "smooth", "shuffled", "spectral"}
    assert data["kernels"][0]["best_match"]["family"] in {"gabor", "edge", "centre-surround", "blob", "named"}
    csv_lines = result.to_csv().splitlines()
    assert csv_lines[0].startswith("index,class,margin,best_family") and len(csv_lines) == 6
    assert csv_lines[1].split(",")[1] == "gabor-like"
    table = result.summary_table()
    assert "thresholds (p99 of the random, shuffled nulls" in table
    assert "gabor-like" in table and "random (200)" in table


def test_json_is_strict_even_with_dead_kernels_and_an_all_zero_init(rng):
    from kernelscope.analysis.atlas.evolution import evolution

    kernels, _ = _gabors(7, rng, n=4)
    kernels[1] = 0.0
    result = atlas(kernels, n_null=N_NULL)
    result.evolution = evolution({0: np.zeros_like(kernels), 1: kernels}, thresholds=result.thresholds)
    text = result.to_json()  # allow_nan=False: raises on any NaN left
    data = json.loads(text)
    assert data["kernels"][1]["class"] == "degenerate" and data["kernels"][1]["scores"]["edge"] is None
    assert data["evolution"]["distance_from_init"][1] == [None] * 4
    assert "median distance from init nan" in result.summary_table()
    from kernelscope.report.figures.atlas import atlas_figures

    assert len(atlas_figures(result)) == 3  # draws without warnings despite the NaNs


def test_deterministic_given_the_seed(rng):
    kernels = rng.standard_normal((6, 1, 5, 5))
    a = atlas(kernels, n_null=N_NULL, seed=3)
    b = atlas(kernels, n_null=N_NULL, seed=3)
    assert a.to_json() == b.to_json()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"percentile": 100}, r"percentile must be between 50 and 100 \(exclusive\), got 100"),
    ({"n_null": 5}, r"n_null must be at least 10 kernels per null, got 5"),
    ({"nulls": ("random", "smoth")}, r"unknown null 'smoth'; did you mean 'smooth'\?"),
    ({"init_kernels": np.zeros((3, 1, 5, 5))}, r"init_kernels must have the kernels' shape \(4, 1, 5, 5\), got \(3, 1, 5, 5\)"),
    ({"threshold_nulls": ("init",)}, r"threshold_nulls \('init',\) selects no computed null"),
])
def test_bad_arguments(kwargs, message, rng):
    with pytest.raises(KernelscopeError, match=message):
        atlas(rng.standard_normal((4, 1, 5, 5)), **{"n_null": 50, **kwargs})
