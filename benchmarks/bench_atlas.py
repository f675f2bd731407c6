"""Speed of the kernel atlas: a 96-kernel 11x11x3 layer and a 64-kernel 7x7 layer.

Run: ``OPENBLAS_THREAD_TIMEOUT=4 .venv/bin/python benchmarks/bench_atlas.py``

Prints, per layer shape: the full atlas (every measure on the kernels and on the
nulls of 1,000 kernels each: random, smoothed, pixel-shuffled, spectrum-matched and a
fresh-init null),
first call (nulls drawn and measured) and second call (random and smoothed nulls
cached; the others depend on the kernels); the vectorised Gabor fit per kernel; and the baseline, a per-kernel
``scipy.optimize.least_squares`` fit of the same model from the same starts, timed on
a subset, with the ratio. Medians of ``--repeat`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")

import numpy as np  # noqa: E402


def _layer(o, c, k, seed):
    """Half Gabor-like RGB kernels, half random: the atlas's work does not depend much on which."""
    from kernelscope.analysis.atlas.templates import gabor_template

    rng = np.random.default_rng(seed)
    half = o // 2
    gabors = [gabor_template((k, k), frequency=rng.uniform(0.12, 0.3), theta=rng.uniform(0, np.pi),
                             phase=rng.uniform(-np.pi, np.pi), sigma_u=k / 4.5, sigma_v=k / 4.0)
              for _ in range(half)]
    colour = rng.standard_normal((half, c, 1, 1))
    structured = colour * np.stack(gabors)[:, None] + 0.05 * rng.standard_normal((half, c, k, k))
    return np.concatenate([structured, rng.standard_normal((o - half, c, k, k))])


def _time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _scipy_baseline(profiles, starts=3):
    """Per-kernel scipy least_squares (trust-region) fit of the same 9-parameter model."""
    from scipy.optimize import least_squares

    from kernelscope.analysis.atlas.gabor import _coords, _evaluate, _linear_solve, _start_grid

    shape = profiles.shape[1:]
    x, y = _coords(shape)
    grid, cos_t, sin_t = _start_grid(shape)
    best = []
    for kernel in profiles:
        data = kernel.ravel()
        centred = data - data.mean()
        energy = (cos_t @ centred) ** 2 + (sin_t @ centred) ** 2
        r2s = []
        for g in np.argsort(-energy)[:starts]:
            sx, sy, th, f, s = grid[g]
            p0 = _linear_solve(data[None], np.array([[sx, sy, th, np.log(f), np.log(s), np.log(s)]]), x, y)[0]

            def residual(p, data=data):
                return _evaluate(p[None], x, y, jacobian=False)[0][0] - data

            fit = least_squares(residual, p0, method="trf", max_nfev=200)
            r2s.append(1 - np.sum(fit.fun**2) / np.sum(centred**2))
        best.append(max(r2s))
    return np.asarray(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-kernels", type=int, default=12)
    args = parser.parse_args()

    from kernelscope.analysis.atlas import atlas
    from kernelscope.analysis.atlas import core as atlas_core
    from kernelscope.analysis.atlas.gabor import fit_gabor
    from kernelscope.analysis.atlas.matching import spatial_profiles
    from kernelscope.analysis.atlas.templates import template_bank

    print(f"kernelscope atlas benchmark (CPU threads: {os.cpu_count()}; medians of {args.repeat})")
    for o, c, k in ((96, 3, 11), (64, 1, 7)):
        kernels = _layer(o, c, k, seed=0)
        init_null = np.random.default_rng(1).uniform(-1, 1, (1000, c, k, k))
        template_bank((k, k))  # built once per size and cached; not part of the atlas time below

        def full(kernels=kernels, init_null=init_null):
            return atlas(kernels, init_null=init_null, n_null=1000)

        def cold(full=full):
            atlas_core._NULL_CACHE.clear()
            return full()

        cold()  # warm-up
        t_cold = _time(cold, args.repeat)
        full()
        t_warm = _time(full, args.repeat)
        profiles, _ = spatial_profiles(kernels)
        fit_gabor(profiles[:4])
        t_fit = _time(lambda profiles=profiles: fit_gabor(profiles), args.repeat)
        sub = profiles[: args.baseline_kernels]
        start = time.perf_counter()
        base_r2 = _scipy_baseline(sub)
        t_base = (time.perf_counter() - start) / len(sub)
        ours_r2 = fit_gabor(sub).r2
        result = full()
        print(f"\n{o} kernels of {c}x{k}x{k} ({len(template_bank((k, k)))} bank templates, {len(result.control_sizes)} nulls x 1000 kernels)")
        print(f"  full atlas, nulls drawn and measured : {t_cold:7.2f} s")
        print(f"  full atlas, random/smooth nulls cached: {t_warm:7.2f} s")
        print(f"  vectorised Gabor fit of the layer     : {t_fit:7.3f} s = {1e3 * t_fit / o:.2f} ms/kernel")
        print(f"  baseline scipy least_squares per kernel: {1e3 * t_base:.1f} ms/kernel "
              f"-> vectorised is {t_base / (t_fit / o):.1f}x faster "
              f"(median R^2 ours {np.median(ours_r2):.3f}, scipy {np.median(base_r2):.3f})")
        print(f"  classes: {dict((k_, v) for k_, v in result.counts.items() if v)}")


if __name__ == "__main__":
    main()
