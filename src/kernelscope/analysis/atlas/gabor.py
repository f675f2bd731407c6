"""Least-squares fit of a 2-D Gabor to every kernel at once, with a free centre.

The model, on the kernel's pixel grid (x right, y down, origin at the middle)::

    u = (x - x0) cos(theta) + (y - y0) sin(theta)      # along the wave vector
    v = -(x - x0) sin(theta) + (y - y0) cos(theta)     # across it
    g = exp(-u^2 / (2 su^2) - v^2 / (2 sv^2)) * (a cos(2 pi f u) + b sin(2 pi f u)) + c

Nine parameters: centre ``(x0, y0)``, orientation ``theta``, frequency ``f``,
envelope widths ``su`` (along the wave) and ``sv`` (across it), and the linear
``a, b, c`` (amplitude and phase ``atan2(-b, a)``, offset). Nothing is pinned: a
fit whose centre is fixed at the middle under-scores real off-centre edges.

How: a coarse grid of quadrature Gabor pairs (frequencies x orientations x widths x
centre shifts) is correlated with every kernel; the ``starts`` best grid points
(by quadrature energy) start a Levenberg-Marquardt refinement with the analytic
Jacobian, vectorised over all kernels and starts at once (batched 9x9 solves).
The best start by residual wins. ``f``, ``su``, ``sv`` are fitted as logarithms and
clipped to ``f <= 0.5`` (Nyquist), ``0.3 <= s <= 3 * size``; the centre stays within
half the kernel's size of the middle.

R^2 = 1 - SS_res / SS_tot, with SS_tot about the kernel's mean. With 9 free
parameters a 3x3 kernel is always fitted exactly, so no Gabor fit is reported for
kernels smaller than 5x5; at 5x5 the fit is still very flexible, which is why the
atlas judges R^2 against null distributions of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kernelscope.analysis.atlas.templates import centre_shifts, gabor_template

__all__ = ["GaborFit", "fit_gabor", "gabor_model", "MIN_GABOR_SIZE"]

MIN_GABOR_SIZE = 5
_N_PARAMS = 9


@dataclass(frozen=True)
class GaborFit:
    """Fitted Gabor parameters for N kernels (arrays of shape (N,)).

    Attributes
    ----------
    r2 : R^2 of the fit (NaN for a constant kernel).
    x0, y0 : centre in pixels from the kernel's middle (x right, y down).
    theta : direction of the wave vector in [0, pi), radians (x right, y down).
    frequency : cycles per pixel (wavelength = 1 / frequency).
    sigma_u, sigma_v : envelope widths along and across the wave vector, pixels.
    amplitude, phase, offset : ``amplitude * cos(2 pi f u + phase) + offset``.
    fitted : ndarray of shape (N, kh, kw), the fitted Gabors.
    """

    r2: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    theta: np.ndarray
    frequency: np.ndarray
    sigma_u: np.ndarray
    sigma_v: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray
    offset: np.ndarray
    fitted: np.ndarray

    @property
    def wavelength(self) -> np.ndarray:
        return 1.0 / self.frequency

    @property
    def cycles(self) -> np.ndarray:
        """Envelope width along the wave in cycles (``sigma_u * frequency``): ~0.16 for an
        edge detector (one zero crossing), >= ~0.3 for a striped, Gabor-like kernel."""
        return self.sigma_u * self.frequency


def _coords(shape):
    kh, kw = shape
    y, x = np.mgrid[0:kh, 0:kw].astype(float)
    return (x - (kw - 1) / 2).ravel(), (y - (kh - 1) / 2).ravel()


def _evaluate(params, x, y, *, jacobian: bool):
    """Model values (B, n) and optionally the Jacobian, stored transposed as (B, 9, n)."""
    x0, y0, theta, logf, logsu, logsv, a, b, c = (params[:, i : i + 1] for i in range(_N_PARAMS))
    f, su, sv = np.exp(logf), np.exp(logsu), np.exp(logsv)
    ct, st = np.cos(theta), np.sin(theta)
    dx, dy = x[None, :] - x0, y[None, :] - y0  # (B, n)
    u = dx * ct + dy * st
    v = -dx * st + dy * ct
    w = 2 * np.pi * f
    env = np.exp(-0.5 * ((u / su) ** 2 + (v / sv) ** 2))  # (B, n)
    phase = w * u
    cw, sw = np.cos(phase), np.sin(phase)
    carrier = a * cw + b * sw
    model = env * carrier + c
    if not jacobian:
        return model, None
    jac = np.empty((params.shape[0], _N_PARAMS, x.size))  # (B, 9, n): rows contiguous for matmul
    quad = env * (b * cw - a * sw)  # env * d(carrier)/d(phase)
    ec = env * carrier
    dg_du = quad * w - ec * u / su**2
    dg_dv = -ec * v / sv**2
    jac[:, 0] = -dg_du * ct + dg_dv * st
    jac[:, 1] = -dg_du * st - dg_dv * ct
    jac[:, 2] = dg_du * v - dg_dv * u
    jac[:, 3] = quad * phase
    jac[:, 4] = ec * (u / su) ** 2
    jac[:, 5] = ec * (v / sv) ** 2
    jac[:, 6] = env * cw
    jac[:, 7] = env * sw
    jac[:, 8] = 1.0
    return model, jac


def gabor_model(shape: tuple[int, int], params: np.ndarray) -> np.ndarray:
    """Evaluate the Gabor model for parameter rows ``(x0, y0, theta, log f, log su, log sv, a, b, c)``.

    Parameters
    ----------
    shape : tuple of int
        ``(kh, kw)``.
    params : ndarray of shape (B, 9)

    Returns
    -------
    ndarray of shape (B, kh, kw)

    Examples
    --------
    >>> p = np.array([[0, 0, 0, np.log(0.25), np.log(2), np.log(2), 1, 0, 0]])
    >>> g = gabor_model((5, 5), p)
    >>> float(g[0, 2, 2]), bool(np.allclose(g[0], g[0, :, ::-1]))
    (1.0, True)
    """
    x, y = _coords(shape)
    model, _ = _evaluate(np.asarray(params, dtype=float), x, y, jacobian=False)
    return model.reshape(-1, *shape)


@lru_cache(maxsize=16)
def _start_grid(shape):
    size = min(shape)
    freqs = np.geomspace(0.7 / size, 0.35, 4)
    thetas = np.arange(8) * np.pi / 8
    widths = (size / 6, size / 3.5)
    rows = []
    for sy, sx in centre_shifts(shape):
        for f in freqs:
            for th in thetas:
                for s in widths:
                    rows.append((sx, sy, th, f, s))
    grid = np.asarray(rows)  # (G, 5)
    cos_t = np.stack([gabor_template(shape, frequency=f, theta=th, phase=0.0, sigma_u=s, sigma_v=s,
                                     centre=(sx, sy)).ravel() for sx, sy, th, f, s in rows])
    sin_t = np.stack([gabor_template(shape, frequency=f, theta=th, phase=-np.pi / 2, sigma_u=s, sigma_v=s,
                                     centre=(sx, sy)).ravel() for sx, sy, th, f, s in rows])
    return grid, cos_t, sin_t


def _linear_solve(data, nonlinear, x, y):
    """Best (a, b, c) for fixed nonlinear parameters, by least squares. data (B, n)."""
    params = np.concatenate([nonlinear, np.zeros((nonlinear.shape[0], 3))], axis=1)
    _, jac = _evaluate(params, x, y, jacobian=True)
    basis = jac[:, 6:9]  # (B, 3, n): env*cos, env*sin, 1
    gram = basis @ basis.transpose(0, 2, 1) + 1e-9 * np.eye(3)  # (B, 3, 3)
    rhs = basis @ data[..., None]  # (B, 3, 1)
    params[:, 6:9] = np.linalg.solve(gram, rhs)[..., 0]
    return params


def _clip(params, shape):
    size = min(shape)
    limit_x, limit_y = shape[1] / 2, shape[0] / 2
    params[:, 0] = np.clip(params[:, 0], -limit_x, limit_x)
    params[:, 1] = np.clip(params[:, 1], -limit_y, limit_y)
    params[:, 3] = np.clip(params[:, 3], np.log(0.2 / size), np.log(0.5))
    params[:, 4:6] = np.clip(params[:, 4:6], np.log(0.3), np.log(3.0 * size))
    return params


def _levenberg_marquardt(data, params, shape, x, y, iterations, lam=None):
    """Damped Gauss-Newton steps on every fit at once; returns params, loss and damping."""
    # Model and Jacobian in float32 (4x faster transcendental maths); steps solved in float64.
    lam = np.full(data.shape[0], 1e-2) if lam is None else lam
    data, x, y = data.astype(np.float32), x.astype(np.float32), y.astype(np.float32)
    model, _ = _evaluate(params.astype(np.float32), x, y, jacobian=False)
    loss = np.sum((model - data).astype(np.float64) ** 2, axis=1)
    eye = np.eye(_N_PARAMS)
    for _ in range(iterations):
        model, jac = _evaluate(params.astype(np.float32), x, y, jacobian=True)  # (B, n), (B, 9, n)
        residual = model - data  # (B, n)
        jtj = (jac @ jac.transpose(0, 2, 1)).astype(np.float64)  # (B, 9, 9)
        jtr = (jac @ residual[..., None]).astype(np.float64)  # (B, 9, 1)
        damped = jtj + lam[:, None, None] * (jtj * eye + 1e-9 * eye)
        try:
            step = np.linalg.solve(damped, -jtr)[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(m, -r[:, 0], rcond=None)[0] for m, r in zip(damped, jtr, strict=True)])
        step = np.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
        trial = _clip(params + step, shape)
        trial_model, _ = _evaluate(trial.astype(np.float32), x, y, jacobian=False)
        trial_loss = np.sum((trial_model - data).astype(np.float64) ** 2, axis=1)
        better = trial_loss < loss
        params = np.where(better[:, None], trial, params)
        loss = np.where(better, trial_loss, loss)
        lam = np.clip(np.where(better, lam / 3, lam * 4), 1e-7, 1e7)
    return params, loss, lam


def fit_gabor(profiles: np.ndarray, *, starts: int = 3, iterations: int = 60,
              chunk: int = 2048) -> GaborFit:
    """Fit a 2-D Gabor with free centre, orientation, wavelength, phase, widths to each kernel.

    Parameters
    ----------
    profiles : ndarray of shape (N, kh, kw)
        Spatial kernels (use :func:`~kernelscope.analysis.atlas.matching.spatial_profiles`
        for multi-channel kernels).
    starts : int
        Starts per kernel, the best grid points by quadrature energy.
    iterations : int
        Levenberg-Marquardt iterations.
    chunk : int
        Fits (kernels x starts) per vectorised batch.

    Returns
    -------
    GaborFit

    Examples
    --------
    >>> from kernelscope.analysis.atlas.templates import gabor_template
    >>> g = gabor_template((9, 9), frequency=0.2, theta=2.0, phase=0.7, sigma_u=2.0,
    ...                    sigma_v=1.5, centre=(1.3, -0.6))
    >>> fit = fit_gabor(g[None])
    >>> round(float(fit.r2[0]), 4), round(float(fit.theta[0]), 3), round(float(fit.x0[0]), 2)
    (1.0, 2.0, 1.3)
    """
    profiles = np.asarray(profiles, dtype=float)
    n, kh, kw = profiles.shape
    shape = (kh, kw)
    x, y = _coords(shape)
    data = profiles.reshape(n, kh * kw)
    grid, cos_t, sin_t = _start_grid(shape)
    starts = max(1, min(int(starts), grid.shape[0]))
    centred = data - data.mean(axis=1, keepdims=True)
    ss_tot = np.sum(centred**2, axis=1)
    best_params = np.zeros((n, _N_PARAMS))
    best_loss = np.full(n, np.inf)
    for begin in range(0, n, max(1, chunk // starts)):
        end = min(n, begin + max(1, chunk // starts))
        block = centred[begin:end]
        energy = (block @ cos_t.T) ** 2 + (block @ sin_t.T) ** 2  # (b, G)
        top = np.argsort(-energy, axis=1)[:, :starts]  # (b, starts)
        chosen = grid[top.ravel()]  # (b*starts, 5)
        nonlinear = np.column_stack([chosen[:, 0], chosen[:, 1], chosen[:, 2], np.log(chosen[:, 3]),
                                     np.log(chosen[:, 4]), np.log(chosen[:, 4])])
        target = np.repeat(data[begin:end], starts, axis=0)  # (b*starts, n)
        params = _linear_solve(target, nonlinear, x, y)
        # All starts for a quarter of the iterations, then only the best start per kernel.
        early = max(1, iterations // 4) if starts > 1 else iterations
        params, loss, lam = _levenberg_marquardt(target, params, shape, x, y, early)
        pick = np.argmin(loss.reshape(end - begin, starts), axis=1)
        rows = np.arange(end - begin) * starts + pick
        params, loss, _ = _levenberg_marquardt(data[begin:end], params[rows], shape, x, y,
                                               iterations - early if starts > 1 else 0, lam[rows])
        best_params[begin:end] = params
        best_loss[begin:end] = loss
    final, _ = _evaluate(best_params, x, y, jacobian=False)  # float64 for the reported R^2
    best_loss = np.sum((final - data) ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 1e-20 * kh * kw, 1.0 - best_loss / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
    return _to_fit(best_params, r2, shape, x, y)


def _to_fit(params, r2, shape, x, y):
    params = params.copy()
    # Canonical form: theta in [0, pi); flipping the wave vector flips the sine part.
    theta = np.mod(params[:, 2], 2 * np.pi)
    flip = theta >= np.pi
    params[:, 2] = np.where(flip, theta - np.pi, theta)
    params[:, 7] = np.where(flip, -params[:, 7], params[:, 7])
    a, b = params[:, 6], params[:, 7]
    model, _ = _evaluate(params, x, y, jacobian=False)
    return GaborFit(
        r2=r2, x0=params[:, 0], y0=params[:, 1], theta=params[:, 2], frequency=np.exp(params[:, 3]),
        sigma_u=np.exp(params[:, 4]), sigma_v=np.exp(params[:, 5]), amplitude=np.hypot(a, b),
        phase=np.arctan2(-b, a), offset=params[:, 8], fitted=model.reshape(-1, *shape),
    )
