"""Matching kernels to the classical bank: exact cosines, signs, transforms, shifts, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelscope.analysis.atlas.matching import as_kernel_stack, match_bank, spatial_profiles
from kernelscope.analysis.atlas.templates import (
    DIHEDRAL,
    centre_shifts,
    gabor_template,
    template_bank,
)
from kernelscope.errors import KernelscopeError


def _unit(a):
    a = a - a.mean()
    return a / np.linalg.norm(a)


def test_random_7x7_null_matches_the_measured_reference(rng):
    # FINDINGS: random 7x7 kernels reach median ~0.41, p99 ~0.58 against a 3,240-Gabor grid.
    bank = template_bank((7, 7), named=False)
    scores = match_bank(rng.standard_normal((1000, 7, 7)), bank).score["gabor"]
    assert 0.38 < np.median(scores) < 0.46
    assert 0.53 < np.percentile(scores, 99) < 0.63


@pytest.mark.parametrize("size", [5, 7, 9])
def test_parametric_families_are_closed_under_the_8_transforms(size):
    bank = template_bank((size, size), named=False)
    for family in ("gabor", "edge", "centre-surround"):
        rows = bank.matrix[bank.members(family)]
        picks = rows[:: max(1, len(rows) // 25)]
        for fn in DIHEDRAL.values():
            moved = np.stack([fn(r.reshape(size, size)).ravel() for r in picks])
            best = np.max(np.abs(moved @ rows.T), axis=1)
            np.testing.assert_allclose(best, 1.0, atol=1e-9)


def test_every_template_cosine_is_exact_and_the_best_one_wins(rng):
    bank = template_bank((7, 7))
    kernels = rng.standard_normal((20, 1, 7, 7))
    m = match_bank(kernels, bank)
    every = np.stack([_unit(k[0]).ravel() for k in kernels]) @ bank.matrix.T  # (20, M)
    edges = bank.members("edge")
    np.testing.assert_allclose(m.score["edge"], np.abs(every[:, edges]).max(axis=1), rtol=1e-6)
    non_blob = bank.family != "blob"
    # the overall best is at least every mean-removed family's best
    assert np.all(m.best_score >= np.abs(every[:, non_blob]).max(axis=1) - 1e-6)


def test_sign_is_kept_and_a_negated_kernel_flips_it():
    g = gabor_template((7, 7), frequency=0.2, theta=np.pi / 3, phase=-np.pi / 2, sigma_u=1.5, sigma_v=1.5)
    m = match_bank(np.stack([g, -g]), template_bank((7, 7), named=False))
    assert m.score["gabor"][0] == pytest.approx(m.score["gabor"][1])
    assert m.sign["gabor"][0] == -m.sign["gabor"][1]
    assert m.best_sign[0] == -m.best_sign[1]


def test_off_centre_edges_are_found_with_their_shift():
    bank = template_bank((9, 9), named=False)
    edge_rows = np.flatnonzero(bank.family == "edge")
    target = edge_rows[(bank.shift[edge_rows] == (2, -1)).all(axis=1)][7]
    m = match_bank(bank.template(int(target)) * 3.0 + 0.5, bank)
    assert m.score["edge"][0] == pytest.approx(1.0)
    assert tuple(bank.shift[m.index["edge"][0]]) == (2, -1)
    assert m.describe(0)["shift"] == [2, -1]


def test_named_kernels_are_matched_under_their_transforms():
    from kernelscope.kernels import get_kernel

    bank = template_bank((3, 3))
    kernel = -2.0 * get_kernel("sobel_y")
    m = match_bank(kernel, bank)
    best = m.describe(0)
    assert best["score"] == pytest.approx(1.0)
    assert best["family"] == "edge"
    # sign x (transformed template) reproduces the kernel's shape exactly
    j = int(m.best_index[0])
    np.testing.assert_allclose(best["sign"] * bank.template(j), _unit(kernel), atol=1e-9)
    # a named kernel rotated by 90 degrees is found, with the transform recorded
    rot = np.rot90(get_kernel("scharr_x"))
    m2 = match_bank(rot, bank)
    j = m2.index["edge"][0]
    assert m2.score["edge"][0] == pytest.approx(1.0)
    assert bank.name[j] in {"scharr_x", "scharr_y"}
    if bank.name[j] == "scharr_x":
        assert bank.transform[j] in {"rot90", "rot270", "transpose", "anti_transpose"}


def test_blobs_are_matched_with_their_mean_and_constants_only_as_blobs():
    bank = template_bank((7, 7), named=False)
    y, x = np.mgrid[-3:4, -3:4]
    blob = np.exp(-(x**2 + y**2) / (2 * 1.75**2))
    m = match_bank(np.stack([blob, np.ones((7, 7))]), bank)
    assert m.score["blob"][0] > 0.99 and m.score["blob"][1] == pytest.approx(1.0)
    assert np.isnan(m.score["edge"][1])  # a constant kernel has no shape once its mean is removed
    assert m.describe(1)["name"] == "box"


def test_multichannel_kernels_use_their_leading_spatial_profile(rng):
    g = gabor_template((7, 7), frequency=0.25, theta=0.4, phase=0.0, sigma_u=1.5, sigma_v=2.0)
    colour = np.array([0.2, 1.0, -0.5])
    k = colour[:, None, None] * g[None]  # (3, 7, 7), rank 1
    profiles, rank1 = spatial_profiles(k[None])
    assert rank1[0] == pytest.approx(1.0)
    assert abs(_unit(profiles[0]).ravel() @ _unit(g).ravel()) == pytest.approx(1.0)
    noisy = k + 0.3 * rng.standard_normal(k.shape)
    assert spatial_profiles(noisy[None])[1][0] < 1.0


def test_centre_shifts_grow_with_size():
    assert centre_shifts((3, 3)) == [(0, 0)]
    assert (1, -1) in centre_shifts((5, 5)) and (2, 0) not in centre_shifts((7, 7))
    assert (-2, 2) in centre_shifts((11, 11))


@pytest.mark.parametrize(("value", "message"), [
    (np.zeros((2, 2, 2, 2, 2)), r"must have shape \(O, C, kh, kw\), \(O, kh, kw\) or \(kh, kw\), got shape \(2, 2, 2, 2, 2\)"),
    (np.zeros((0, 1, 3, 3)), r"kernels is empty: shape \(0, 1, 3, 3\)"),
    (np.zeros((4, 1, 1, 5)), r"at least 2x2 spatially .* got 1x5"),
    (np.array([[np.nan, 0], [0, 0]]), r"NaN or infinite"),
    (np.array([["a", "b"], ["c", "d"]]), r"numeric array, got dtype <U1"),
])
def test_bad_kernel_arrays_are_one_line_errors(value, message):
    with pytest.raises(KernelscopeError, match=message):
        as_kernel_stack(value)


def test_bank_of_another_size_is_refused():
    with pytest.raises(KernelscopeError, match=r"bank shape \(5, 5\) does not match kernel size \(7, 7\)"):
        match_bank(np.zeros((7, 7)) + np.eye(7), template_bank((5, 5), named=False))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), transform=st.sampled_from(sorted(DIHEDRAL)),
       scale=st.floats(0.01, 100.0), size=st.sampled_from([3, 5, 7]))
def test_scores_are_invariant_to_the_8_transforms_and_to_scale(seed, transform, scale, size):
    """The bank is closed under the symmetries of the square, so a kernel and its rotation or flip
    (times any positive factor) get the same score in every family."""
    kernel = np.random.default_rng(seed).standard_normal((size, size))
    bank = template_bank((size, size))
    a = match_bank(kernel, bank)
    b = match_bank(scale * DIHEDRAL[transform](kernel), bank)
    for family in a.score:
        assert b.score[family][0] == pytest.approx(a.score[family][0], abs=1e-6), family
