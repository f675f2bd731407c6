"""Tuning curves: full-field sinusoidal gratings over orientation, spatial frequency and phase.

Every channel of a layer is read at its centre unit while the model sees gratings (raw values in
[0, 1], then the model's normalisation)::

    g(x, y) = 0.5 + 0.5 * contrast * cos(2 pi f (x cos(theta) + y sin(theta)) + phase)

with ``x`` right and ``y`` down from the image centre, ``theta`` the direction of the wave vector
(the conventions of :func:`kernelscope.kernels.gabor_kernel` and of the atlas's Gabor fit, so
``theta = 0`` gives vertical stripes). The same grating is given to every input channel.

Per channel, from the response ``R[theta, f, phase]`` less the response ``r0`` to the blank grey image:

- preferred orientation and frequency: the argmax of the peak over phase, ``max_phase R - r0``;
- orientation selectivity index ``OSI = |sum_theta r(theta) exp(2 i theta)| / sum_theta r(theta)``
  (one minus the circular variance) of ``r(theta) = max(0, max_phase R(theta, f*) - r0)`` at the
  preferred frequency: 0 for no orientation preference, 1 for a single orientation;
- phase modulation ``F1 / F0`` at the preferred grating: ``F1`` the amplitude of the response's
  first harmonic over phase, ``F0 = |mean_phase R - r0|``. A linear filter gives ``F0 = 0``
  (infinite ratio), a half-wave rectified one ``pi / 2``, a phase-invariant (energy) unit near 0.
  As for V1 cells (Skottun et al., 1991): simple-cell-like when ``F1 / F0 > 1``, complex-cell-like
  otherwise.

:func:`orientation_agreement` compares, for a first conv layer, the orientation of the atlas's
Gabor fit of each kernel with the orientation measured from the activations; the network at
initialisation is the control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._display import Displayed, Picture, Summary
from kernelscope._io import finite_or_none
from kernelscope.analysis.hooks import forward_until, model_device, read_point
from kernelscope.errors import KernelscopeError
from kernelscope.models.layers import get_layer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from torch import nn

__all__ = ["gratings", "Tuning", "tuning_curves", "orientation_agreement", "default_frequencies"]


def default_frequencies(size: int, n: int = 7) -> np.ndarray:
    """``n`` frequencies (cycles per pixel), geometric from 2 cycles across the image to 0.4.

    Examples
    --------
    >>> np.round(default_frequencies(25, 3), 3)
    array([0.08 , 0.179, 0.4  ])
    """
    return np.geomspace(min(2.0 / size, 0.2), 0.4, n)


def gratings(shape: tuple[int, int, int], orientations: Sequence[float], frequencies: Sequence[float],
             phases: Sequence[float], *, contrast: float = 1.0) -> np.ndarray:
    """Sinusoidal gratings in [0, 1] (see the module docstring).

    Returns
    -------
    ndarray of shape (n_orientations, n_frequencies, n_phases, C, H, W), float32

    Examples
    --------
    >>> g = gratings((1, 9, 9), [0.0], [0.25], [0.0])
    >>> g.shape, float(g[0, 0, 0, 0, 4, 4]), float(g[0, 0, 0, 0, 4, 6])  # centre bright, half a period: dark
    ((1, 1, 1, 1, 9, 9), 1.0, 0.0)
    >>> bool(np.allclose(g[0, 0, 0, 0], g[0, 0, 0, 0, ::-1]))  # theta = 0: vertical stripes
    True
    """
    c, h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = x - (w - 1) / 2, y - (h - 1) / 2
    th = np.asarray(orientations, dtype=np.float64)[:, None, None, None, None]
    f = np.asarray(frequencies, dtype=np.float64)[None, :, None, None, None]
    ph = np.asarray(phases, dtype=np.float64)[None, None, :, None, None]
    u = x * np.cos(th) + y * np.sin(th)  # (O, 1, 1, H, W)
    g = 0.5 + 0.5 * contrast * np.cos(2 * np.pi * f * u + ph)  # (O, F, P, H, W)
    return np.repeat(g[:, :, :, None], c, axis=3).astype(np.float32)


@dataclass(repr=False)
class Tuning(Displayed):
    """Tuning of every channel of one layer (arrays of shape (C_out,) unless said otherwise).

    In a notebook: the summary, one row per channel and each channel's response map
    (orientation across, frequency down, best phase).
    """

    layer: str
    read: str
    orientations: np.ndarray  # (O,) radians
    frequencies: np.ndarray  # (F,) cycles per pixel
    phases: np.ndarray  # (P,) radians
    responses: np.ndarray  # (C_out, O, F, P): centre unit, less the blank response
    blank: np.ndarray  # (C_out,) response to the grey image
    preferred_orientation: np.ndarray
    preferred_frequency: np.ndarray
    osi: np.ndarray
    f1_f0: np.ndarray
    peak: np.ndarray  # best (max over gratings) response above blank

    @property
    def responsive(self) -> np.ndarray:
        """Channels that respond to some grating above their blank response."""
        return self.peak > 1e-6 * max(1.0, float(np.nanmax(np.abs(self.responses))) if self.responses.size else 1.0)

    @property
    def simple(self) -> np.ndarray:
        """Simple-cell-like (``F1/F0 > 1``) among responsive channels."""
        return self.responsive & (self.f1_f0 > 1)

    def summary(self) -> dict[str, Any]:
        ok = self.responsive
        return {"channels": int(self.osi.size), "responsive": int(ok.sum()),
                "median_osi": finite_or_none(np.nanmedian(self.osi[ok])) if ok.any() else None,
                "simple_fraction": finite_or_none(self.simple[ok].mean()) if ok.any() else None,
                "median_f1_f0": finite_or_none(np.nanmedian(np.minimum(self.f1_f0[ok], 1e6))) if ok.any() else None}

    def rows(self) -> list[dict[str, Any]]:
        return [{"channel": c, "preferred_orientation_deg": finite_or_none(np.degrees(self.preferred_orientation[c])),
                 "preferred_frequency": finite_or_none(self.preferred_frequency[c]),
                 "osi": finite_or_none(self.osi[c]), "f1_f0": finite_or_none(self.f1_f0[c]),
                 "simple": bool(self.simple[c]), "responsive": bool(self.responsive[c]),
                 "peak": finite_or_none(self.peak[c])} for c in range(self.osi.size)]

    def _display_summary(self) -> Summary:
        o, f, p = len(self.orientations), len(self.frequencies), len(self.phases)
        return Summary(f"grating tuning of {self.layer} ({self.read}): {self.osi.size} channels, {o} orientations x "
                       f"{f} frequencies x {p} phases", list(self.summary().items()), self.rows())

    def _display_picture(self) -> Picture | None:
        if self.responses.size == 0:
            return None
        best_phase = self.responses.max(axis=3).transpose(0, 2, 1)  # (C_out, F, O)
        return Picture(best_phase, caption="response per channel: orientation across, frequency down (max over "
                       "phase, less the blank response; mid-grey is the blank)", columns=min(16, len(best_phase)))

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "read": self.read,
                "orientations_deg": [float(v) for v in np.degrees(self.orientations)],
                "frequencies": [float(v) for v in self.frequencies], "phases": len(self.phases),
                "summary": self.summary(), "channels": self.rows()}


def tuning_curves(model: nn.Module, layer: str, input_shape: tuple[int, int, int], *,
                  normalise: Callable[[np.ndarray], np.ndarray] | None = None, at: str = "activation",
                  orientations: int = 12, frequencies: Sequence[float] | None = None, phases: int = 8,
                  contrast: float = 1.0, batch_size: int = 128) -> Tuning:
    """Grating responses of every channel of ``layer`` at its centre unit (see the module docstring).

    Parameters
    ----------
    input_shape : (C, H, W)
    normalise : callable, optional
        Raw images in [0, 1] -> the model's input (``Source.normalise``).
    orientations, phases : int
        Evenly spaced over [0, pi) and [0, 2 pi).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from kernelscope.kernels import gabor_kernel
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 9, padding=4))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor(gabor_kernel(frequency=0.2, theta=np.pi / 3, size=9)))
    >>> t = tuning_curves(net, "0", (1, 21, 21), at="conv", frequencies=[0.1, 0.2, 0.3])
    >>> round(float(np.degrees(t.preferred_orientation[0]))), float(t.preferred_frequency[0]), bool(t.simple[0])
    (60, 0.2, True)
    """
    import torch

    if orientations < 2 or phases < 3:
        raise KernelscopeError(f"need at least 2 orientations and 3 phases, got {orientations} and {phases}")
    c, h, w = (int(v) for v in input_shape)
    thetas = np.arange(orientations) * np.pi / orientations
    freqs = default_frequencies(min(h, w)) if frequencies is None else np.asarray(frequencies, dtype=np.float64)
    if freqs.size == 0 or np.any(~np.isfinite(freqs)) or np.any(freqs <= 0) or np.any(freqs > 0.5):
        raise KernelscopeError(f"frequencies must be in (0, 0.5] cycles per pixel, got {list(freqs)}")
    phis = np.arange(phases) * 2 * np.pi / phases
    stimuli = gratings((c, h, w), thetas, freqs, phis, contrast=contrast)  # (O, F, P, C, H, W)
    flat = stimuli.reshape(-1, c, h, w)
    blank = np.full((1, c, h, w), 0.5, dtype=np.float32)
    batch = np.concatenate([blank, flat])
    if normalise is not None:
        batch = np.asarray(normalise(batch), dtype=np.float32)
    hook, read = read_point(model, layer, at)
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    outs = []
    model.eval()
    for start in range(0, batch.shape[0], batch_size):
        x = torch.from_numpy(batch[start:start + batch_size]).to(device=device, dtype=dtype)
        y = forward_until(model, hook, x)  # (B, C_out, Ho, Wo)
        if y.dim() != 4:
            raise KernelscopeError(f"layer {hook!r} output has shape {tuple(y.shape)}, not (N, C, H, W)")
        outs.append(y[:, :, (y.shape[2] - 1) // 2, (y.shape[3] - 1) // 2].double().cpu().numpy())  # (B, C_out)
    response = np.concatenate(outs)  # (1 + O*F*P, C_out)
    r0 = response[0]
    resp = (response[1:] - r0).T.reshape(-1, orientations, freqs.size, phases)  # (C_out, O, F, P)
    peak_over_phase = resp.max(axis=3)  # (C_out, O, F)
    flat_best = peak_over_phase.reshape(resp.shape[0], -1).argmax(axis=1)
    best_o, best_f = np.unravel_index(flat_best, (orientations, freqs.size))
    channels = np.arange(resp.shape[0])
    curve = np.clip(peak_over_phase[channels, :, best_f], 0.0, None)  # (C_out, O) at the preferred frequency
    with np.errstate(invalid="ignore", divide="ignore"):
        osi = np.abs(curve @ np.exp(2j * thetas)) / curve.sum(axis=1)
        at_best = resp[channels, best_o, best_f]  # (C_out, P)
        f1 = 2 * np.abs(at_best @ np.exp(-1j * phis)) / phases
        f0 = np.abs(at_best.mean(axis=1))
        f1_f0 = np.where(f0 > 1e-12 * np.maximum(f1, 1e-300), f1 / np.where(f0 > 0, f0, 1.0), np.inf)
    peak = peak_over_phase.reshape(resp.shape[0], -1).max(axis=1)
    f1_f0 = np.where(peak > 0, f1_f0, np.nan)
    return Tuning(layer=layer, read=read, orientations=thetas, frequencies=freqs, phases=phis, responses=resp,
                  blank=r0, preferred_orientation=thetas[best_o], preferred_frequency=freqs[best_f], osi=osi,
                  f1_f0=f1_f0, peak=peak)


def _angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Difference of orientations modulo pi, in [0, pi/2]."""
    d = np.mod(np.asarray(a) - np.asarray(b), np.pi)
    return np.minimum(d, np.pi - d)


def orientation_agreement(model: nn.Module, layer: str, tuning: Tuning, *, min_r2: float = 0.5,
                          tolerance: float | None = None) -> dict[str, Any]:
    """How often the Gabor fit of a conv kernel (the atlas's) points where the measured tuning peaks.

    Per channel the orientation difference (modulo pi) between the wave vector of the atlas's Gabor
    fit of the kernel's spatial profile and the preferred orientation measured with gratings.
    ``agreement`` is the fraction within ``tolerance`` (default: one orientation step) among the
    channels whose Gabor fit has ``R^2 >= min_r2`` and that respond to gratings (``agreement_all``:
    every responding channel, whatever its fit: the number the init control has); chance, for
    orientations unrelated to each other, is ``tolerance / (pi / 2)``.

    Returns a dict (``None`` values and a ``reason`` when the kernels are smaller than 5x5).
    """
    from kernelscope.analysis.atlas.gabor import MIN_GABOR_SIZE, fit_gabor
    from kernelscope.analysis.atlas.matching import spatial_profiles

    weight = getattr(get_layer(model, layer), "weight", None)
    if weight is None or weight.dim() != 4:
        raise KernelscopeError(f"layer {layer!r} has no 4-D conv weight; orientation agreement needs a conv layer")
    kernels = weight.detach().cpu().double().numpy()  # (O, C, kh, kw)
    tolerance = float(np.pi / tuning.orientations.size if tolerance is None else tolerance)
    chance = tolerance / (np.pi / 2)
    if min(kernels.shape[2:]) < MIN_GABOR_SIZE:
        return {"layer": layer, "agreement": None, "median_difference_deg": None, "chance": chance, "n": 0,
                "agreement_all": None, "median_difference_all_deg": None, "n_all": 0,
                "tolerance_deg": float(np.degrees(tolerance)),
                "reason": f"kernels are {kernels.shape[2]}x{kernels.shape[3]}: the atlas fits no Gabor below "
                          f"{MIN_GABOR_SIZE}x{MIN_GABOR_SIZE}"}
    profiles, _ = spatial_profiles(kernels)
    fit = fit_gabor(profiles)
    diff = _angle_difference(fit.theta, tuning.preferred_orientation)  # (O,)
    every = tuning.responsive & np.isfinite(diff)
    keep = (fit.r2 >= min_r2) & every
    return {"layer": layer, "n": int(keep.sum()), "channels": int(diff.size), "min_gabor_r2": min_r2,
            "n_all": int(every.sum()),
            "agreement_all": finite_or_none(np.mean(diff[every] <= tolerance + 1e-9)) if every.any() else None,
            "median_difference_all_deg": finite_or_none(np.degrees(np.median(diff[every]))) if every.any() else None,
            "tolerance_deg": float(np.degrees(tolerance)), "chance": chance,
            "agreement": finite_or_none(np.mean(diff[keep] <= tolerance + 1e-9)) if keep.any() else None,
            "median_difference_deg": finite_or_none(np.degrees(np.median(diff[keep]))) if keep.any() else None,
            "difference_deg": [finite_or_none(v) for v in np.degrees(diff)],
            "gabor_theta_deg": [finite_or_none(v) for v in np.degrees(fit.theta)],
            "gabor_r2": [finite_or_none(v) for v in fit.r2]}
