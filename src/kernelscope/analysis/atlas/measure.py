"""Every per-kernel measurement at once: bank match, Gabor fit, spectrum, colour, quality.

:func:`measure` is run on the kernels under study and on every null, so that each
score is always computed the same way for a kernel and for its controls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernelscope.analysis.atlas.colour import off_luminance_fraction
from kernelscope.analysis.atlas.gabor import MIN_GABOR_SIZE, GaborFit, fit_gabor
from kernelscope.analysis.atlas.matching import (
    BankMatch,
    as_kernel_stack,
    match_bank,
    spatial_profiles,
)
from kernelscope.analysis.atlas.quality import Quality, kernel_quality
from kernelscope.analysis.atlas.spectral import Spectrum, spectral_shape
from kernelscope.analysis.atlas.templates import TemplateBank

__all__ = ["Measures", "measure", "SCORES", "nanmedian"]


def nanmedian(values, axis: int | None = None):
    """Median ignoring NaN; NaN (not a warning) where every value is NaN.

    Examples
    --------
    >>> float(nanmedian([1.0, np.nan, 3.0])), bool(np.isnan(nanmedian([np.nan])))
    (2.0, True)
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.asarray(values, dtype=float), axis=axis)

# The scores that classes are decided on, and what each one is.
SCORES = {
    "edge": "best |cos| with an oriented Gaussian-derivative edge (or a named edge kernel)",
    "gabor": "R^2 of the free-centre Gabor fit (kernels of at least 5x5)",
    "centre-surround": "best |cos| with a difference/Laplacian of Gaussians (or a named Laplacian)",
    "blob": "best |cos| with a Gaussian or box, mean kept",
}


@dataclass(frozen=True)
class Measures:
    """All measurements of N kernels."""

    kernels: np.ndarray  # (N, C, kh, kw)
    profiles: np.ndarray  # (N, kh, kw)
    rank1_fraction: np.ndarray  # (N,)
    match: BankMatch
    gabor: GaborFit | None
    spectrum: Spectrum
    off_luminance: np.ndarray  # (N,)
    quality: Quality

    def __len__(self) -> int:
        return self.kernels.shape[0]

    @property
    def gabor_identifiable(self) -> bool:
        return self.gabor is not None

    def scores(self) -> dict[str, np.ndarray]:
        """The class scores, each ``(N,)`` (``gabor`` absent when not identifiable)."""
        out = {"edge": self.match.score["edge"], "centre-surround": self.match.score["centre-surround"],
               "blob": self.match.score["blob"]}
        if self.gabor is not None:
            out["gabor"] = self.gabor.r2
        return out


def measure(kernels: np.ndarray, *, bank: TemplateBank | None = None, gabor_starts: int = 3,
            gabor_iterations: int = 40) -> Measures:
    """Measure every kernel: bank match, Gabor fit (from 5x5), spectrum, colour, quality.

    Parameters
    ----------
    kernels : ndarray of shape (N, C, kh, kw), (N, kh, kw) or (kh, kw)
    bank : TemplateBank, optional
        Default: the bank at the kernels' size.
    gabor_starts, gabor_iterations : int
        Passed to :func:`~kernelscope.analysis.atlas.gabor.fit_gabor`.

    Returns
    -------
    Measures

    Examples
    --------
    >>> from kernelscope.analysis.atlas.templates import template_bank
    >>> m = measure(np.random.default_rng(0).standard_normal((4, 3, 3, 3)), bank=template_bank((3, 3), named=False))
    >>> m.gabor is None, sorted(m.scores())
    (True, ['blob', 'centre-surround', 'edge'])
    """
    stack = as_kernel_stack(kernels)
    profiles, rank1 = spatial_profiles(stack)
    match = match_bank(stack, bank)
    fit = None
    if min(stack.shape[2:]) >= MIN_GABOR_SIZE:
        fit = fit_gabor(profiles, starts=gabor_starts, iterations=gabor_iterations)
    return Measures(kernels=stack, profiles=profiles, rank1_fraction=rank1, match=match, gabor=fit,
                    spectrum=spectral_shape(profiles), off_luminance=off_luminance_fraction(stack),
                    quality=kernel_quality(stack))
