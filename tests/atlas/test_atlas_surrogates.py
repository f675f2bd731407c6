"""The surrogate test per kernel: surrogates that keep what they claim, p-values, BH, controls."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from kernelscope.analysis.atlas import atlas
from kernelscope.analysis.atlas.controls import null_kernels
from kernelscope.analysis.atlas.core import _null_measures
from kernelscope.analysis.atlas.matching import match_bank
from kernelscope.analysis.atlas.surrogates import (
    best_match_scores,
    bh_qvalues,
    phase_surrogates,
    shuffle_surrogates,
    surrogate_pvalues,
    surrogate_test,
)
from kernelscope.analysis.atlas.templates import gabor_template, template_bank
from kernelscope.errors import KernelscopeError

N_SUR = 199


def _gabors(n=12):
    thetas = np.linspace(0, np.pi, n, endpoint=False)
    return np.stack([gabor_template((7, 7), frequency=0.22, theta=t, phase=0.7 * i, sigma_u=1.6, sigma_v=1.8)
                     for i, t in enumerate(thetas)])[:, None]


@pytest.mark.parametrize("shape", [(3, 1, 7, 7), (2, 3, 6, 5), (2, 2, 4, 4)])
def test_phase_surrogates_keep_every_channels_amplitudes_and_the_cross_spectrum(rng, shape):
    k = rng.standard_normal(shape)
    s = phase_surrogates(k, 5, rng=1)  # (O, n, C, kh, kw)
    assert s.shape == (shape[0], 5, *shape[1:]) and np.isrealobj(s)
    f, fs = np.fft.fft2(k)[:, None], np.fft.fft2(s)
    np.testing.assert_allclose(np.abs(fs), np.broadcast_to(np.abs(f), fs.shape), atol=1e-9)
    # the same phase is added to every channel: the channels' cross-spectrum is unchanged
    np.testing.assert_allclose(fs[:, :, :1] * np.conj(fs), np.broadcast_to(f[:, :, :1] * np.conj(f), fs.shape),
                               atol=1e-8)
    assert not np.allclose(s[:, 0], k)  # and the kernel did change


def test_shuffle_surrogates_keep_the_values_and_move_them_together_across_channels(rng):
    k = rng.standard_normal((2, 3, 5, 5))
    s = shuffle_surrogates(k, 4, rng=0)
    for i in range(2):
        for j in range(4):
            a = k[i].reshape(3, -1)
            b = s[i, j].reshape(3, -1)
            order = np.argsort(a[0])
            np.testing.assert_array_equal(np.sort(b[0]), a[0][order])
            # one permutation for all channels: pixel columns stay whole
            assert {tuple(c) for c in b.T.round(12)} == {tuple(c) for c in a.T.round(12)}


@pytest.mark.parametrize("shape", [(40, 1, 7, 7), (30, 3, 5, 5), (20, 1, 3, 3)])
def test_best_match_scores_equal_the_atlas_bank_match(rng, shape):
    k = rng.standard_normal(shape)
    k[0] = 1.0  # a constant kernel matches only the blobs (mean kept)
    bank = template_bank(shape[2:])
    np.testing.assert_allclose(best_match_scores(k, bank), match_bank(k, bank).best_score, atol=2e-6)


def test_bh_qvalues_against_the_definition(rng):
    p = rng.random(30) ** 3
    p[3] = np.nan
    q = bh_qvalues(p)
    filled = np.where(np.isfinite(p), p, 1.0)
    m = filled.size
    ranks = np.argsort(np.argsort(filled)) + 1  # ties: any order gives the same min over j >= i
    brute = np.array([min(min(filled[j] * m / ranks[j] for j in range(m) if filled[j] >= filled[i]), 1.0)
                      for i in range(m)])
    np.testing.assert_allclose(q, brute)
    # Benjamini-Hochberg's step-up rule at 0.05 rejects exactly the q < 0.05 ones
    order = np.sort(filled)
    k = max([i + 1 for i in range(m) if order[i] <= 0.05 * (i + 1) / m], default=0)
    assert np.sum(q <= 0.05) == k


def test_gabors_are_structured_beyond_their_spectrum_and_random_kernels_are_not(rng):
    gabors = surrogate_test(_gabors(), kind="phase", n_surrogates=N_SUR, control_layers=0)
    # a Gabor's spectrum is two narrow bands: some of its phase-randomised surrogates are oriented waves too,
    # so p is small but not always the smallest possible
    assert gabors.count == 12 and np.all(gabors.p <= 0.05) and np.median(gabors.p) <= 0.01
    white = surrogate_test(rng.standard_normal((48, 1, 7, 7)), kind="phase", n_surrogates=N_SUR, control_layers=0)
    assert white.fraction <= 0.05  # under the null p is uniform: BH keeps the FDR, few if any pass
    assert 0.3 < float(np.median(white.p)) < 0.7
    # a kernel that is itself a phase-randomised field of a Gabor's spectrum is no more structured than its kin
    fields = phase_surrogates(_gabors(), 4, rng=3).reshape(-1, 1, 7, 7)
    assert surrogate_test(fields, kind="phase", n_surrogates=N_SUR, control_layers=0).fraction <= 0.1


def test_smooth_random_kernels_pass_the_pixel_test_but_rarely_the_spectrum_test():
    smooth = null_kernels("smooth", (1, 1, 7, 7), n=48, rng=7)
    pixels = surrogate_test(smooth, kind="shuffle", n_surrogates=N_SUR, control_layers=0)
    spectrum = surrogate_test(smooth, kind="phase", n_surrogates=N_SUR, control_layers=0)
    assert pixels.fraction > 0.8  # smoothness is arrangement: shuffling destroys it
    assert spectrum.fraction < 0.35 and spectrum.fraction < pixels.fraction


def test_control_is_its_own_draw_and_corrected_per_pseudo_layer():
    test = surrogate_test(_gabors(), kind="phase", n_surrogates=N_SUR, control_layers=3, controls=("smooth", "random"))
    assert test.control_sizes == {"smooth": 36, "random": 36}
    assert len(test.control_layer_fractions["smooth"]) == 3
    assert test.control_fractions["smooth"] == pytest.approx(np.mean(test.control_layer_fractions["smooth"]))
    assert test.control_fractions["random"] <= 0.1
    again = surrogate_test(_gabors(), kind="phase", n_surrogates=N_SUR, control_layers=3, seed=1)
    assert test.fraction == again.fraction == 1.0


def test_pvalue_counts_surrogates_at_or_above(rng):
    # a constant-free ramp: every pixel shuffle scores below it, so p is 1 / (n + 1)
    ramp = np.tile(np.arange(7.0), (7, 1))[None, None]
    observed, median, p = surrogate_pvalues(ramp, kind="shuffle", n_surrogates=N_SUR, rng=0)
    assert p[0] == pytest.approx(1 / (N_SUR + 1)) and median[0] < observed[0]
    _, _, p_dead = surrogate_pvalues(np.zeros((1, 1, 5, 5)), kind="phase", n_surrogates=N_SUR)
    assert np.isnan(p_dead[0]) and bh_qvalues(p_dead)[0] == 1.0


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(KernelscopeError, match="surrogate kind"):
        surrogate_pvalues(_gabors(), kind="phases")
    with pytest.raises(KernelscopeError, match="n_surrogates must be at least 19"):
        surrogate_pvalues(_gabors(), n_surrogates=5)
    with pytest.raises(KernelscopeError, match="alpha must be between 0 and 1"):
        surrogate_test(_gabors(), alpha=1.5)
    with pytest.raises(KernelscopeError, match="surrogate control"):
        surrogate_test(_gabors(), controls=("smoothed",))


def test_atlas_carries_the_surrogate_test_beside_its_control(rng):
    kernels = np.concatenate([_gabors()[:8], rng.standard_normal((8, 1, 7, 7))])
    result = atlas(kernels, n_null=200, surrogates=N_SUR)
    phase = result.surrogate["phase"]
    assert phase.structured[:8].sum() >= 3 and phase.structured[8:].sum() <= 1
    assert result.surrogate["shuffle"].structured[:8].all()
    assert result.structured_fraction == phase.fraction
    assert set(result.surrogate) == {"phase", "shuffle"}
    assert [r["surrogate"]["phase"]["structured"] for r in result.records] == phase.structured.tolist()
    assert result.records[0]["surrogate"]["phase"]["p"] == pytest.approx(phase.p[0])
    data = result.to_dict()
    assert data["surrogate_test"]["phase"]["control_sizes"] == {"smooth": 64}
    head = result.headline()
    assert head["structured_beyond_spectrum"] == phase.fraction
    assert "structured_beyond_spectrum_control_smooth" in head
    assert "structured beyond its spectrum" in result.summary_table()
    without = atlas(kernels, n_null=200, surrogates=0)
    assert without.surrogate == {} and without.structured_fraction is None
    assert without.classes == result.classes and without.thresholds == result.thresholds


def test_calibration_and_control_are_different_draws(rng):
    kernels = _gabors()
    result = atlas(kernels, n_null=200, surrogates=0, init_null=rng.standard_normal((400, 1, 7, 7)))
    assert set(result.calibration_sizes) == set(result.threshold_nulls) == {"random", "shuffled", "init"}
    assert result.calibration_sizes["init"] == result.control_sizes["init"] == 200
    shape = kernels.shape
    bank = template_bank((7, 7))
    first = _null_measures("random", shape, 200, 0, 1.0, bank, None, False, draw=0)
    second = _null_measures("random", shape, 200, 0, 1.0, bank, None, False, draw=1)
    assert not np.allclose(first.kernels, second.kernels)
    np.testing.assert_allclose(result.null_scores["random"]["edge"], first.scores()["edge"])  # thresholds: draw 0
    np.testing.assert_allclose(result.null_best["random"], second.match.best_score)  # reported: draw 1
    # a control is a measurement: near 1 - percentile, but not the calibration draw's number
    assert result.control_fractions["random"]["unexplained"] >= 0.95


def test_smoothing_the_kernels_does_not_make_them_pass_the_spectrum_test(rng):
    # smoothing changes the spectrum, and the surrogates share it: smooth white noise stays mostly unstructured
    smooth = gaussian_filter(rng.standard_normal((32, 1, 11, 11)), sigma=(0, 0, 1.0, 1.0), mode="wrap")[:, :, 2:9, 2:9]
    assert surrogate_test(smooth, kind="phase", n_surrogates=N_SUR, control_layers=0).fraction < 0.35
