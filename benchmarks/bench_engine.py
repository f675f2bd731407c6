"""The engine's speed against PyTorch's conv2d and SciPy's correlate2d, measured in one run.

    .venv/bin/python benchmarks/bench_engine.py            # the table
    .venv/bin/python benchmarks/bench_engine.py --sweep    # kernel-size sweep behind method="auto"
    KERNELSCOPE_THREADS=1 .venv/bin/python benchmarks/bench_engine.py   # both sides on one thread

Baselines, measured in the same process right next to the engine:
``torch.nn.functional.conv2d`` (float32, the best of contiguous and channels_last
memory formats, ``torch.set_num_threads(THREADS)``) on CNN layer shapes, and
``scipy.signal.correlate2d`` on a 512x512 image. Times are medians of repeated
calls after a warm-up; "engine extra MiB" is the peak NumPy memory of one call beyond
its output (padded copy and per-thread buffers). Goals (issue 2): dense layers within 1.5x of torch,
depthwise within 3x, the 31x31 kernel at least 50x faster than SciPy.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy: no spinning BLAS threads
os.environ.setdefault("KERNELSCOPE_THREADS", "2")  # the engine's threads; torch gets as many

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from kernelscope.ops import correlate2d  # noqa: E402
from kernelscope.ops.correlate import choose_method  # noqa: E402

THREADS = int(os.environ.get("KERNELSCOPE_THREADS", "2"))


def median_time(fn, *, min_runs: int = 5, min_seconds: float = 0.5, warmup: int = 2) -> float:
    """Median seconds per call after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_seconds and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_time(x: np.ndarray, k: np.ndarray, *, padding: int, groups: int) -> tuple[float, str]:
    """The best of torch's contiguous and channels_last conv2d, and which one it was."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    best = (float("inf"), "")
    for fmt_name, fmt in (("contiguous", torch.contiguous_format),
                          ("channels_last", torch.channels_last)):
        xt = torch.from_numpy(x).contiguous(memory_format=fmt)
        kt = torch.from_numpy(k).contiguous(memory_format=fmt)

        def run(xt=xt, kt=kt):
            with torch.no_grad():
                F.conv2d(xt, kt, padding=padding, groups=groups)

        best = min(best, (median_time(run), fmt_name))
    return best


LAYERS = [
    # name, (N, C, H, W), (O, C/groups, kh, kw), padding, groups, goal ratio
    ("first layer 1->32 5x5, 28x28, batch 256", (256, 1, 28, 28), (32, 1, 5, 5), 0, 1, 1.5),
    ("3->64 3x3 pad 1, 32x32, batch 128", (128, 3, 32, 32), (64, 3, 3, 3), 1, 1, 1.5),
    ("64->128 3x3 pad 1, 16x16, batch 64", (64, 64, 16, 16), (128, 64, 3, 3), 1, 1, 1.5),
    ("depthwise 64ch 3x3 pad 1, 32x32, batch 64", (64, 64, 32, 32), (64, 1, 3, 3), 1, 64, 3.0),
]


def extra_memory_mib(fn, output_bytes: int) -> float:
    """Peak NumPy memory of one call beyond its output (tracemalloc sees NumPy's allocations)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - output_bytes) / 2**20


def layer_table() -> list[str]:
    import torch  # noqa: F401  (imported once, outside the timings)

    rng = np.random.default_rng(0)
    rows = ["| case | method | engine ms | torch ms (format) | engine / torch | goal | engine extra MiB |",
            "|---|---|---:|---:|---:|---|---:|"]
    for name, xs, ks, padding, groups, goal in LAYERS:
        x = rng.standard_normal(xs, dtype=np.float32)
        k = rng.standard_normal(ks, dtype=np.float32)
        method = choose_method((xs[0], xs[1], xs[2] + 2 * padding, xs[3] + 2 * padding), ks,
                               groups=groups)
        ours = median_time(lambda x=x, k=k, p=padding, g=groups: correlate2d(x, k, padding=p, groups=g))
        theirs, fmt = torch_time(x, k, padding=padding, groups=groups)
        ratio = ours / theirs
        out_bytes = xs[0] * ks[0] * (xs[2] + 2 * padding - ks[2] + 1) * (xs[3] + 2 * padding - ks[3] + 1) * 4
        extra = extra_memory_mib(lambda x=x, k=k, p=padding, g=groups: correlate2d(x, k, padding=p, groups=g),
                                 out_bytes)
        rows.append(f"| {name} | {method} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} ({fmt}) | "
                    f"{ratio:.2f}x | <= {goal}x {'met' if ratio <= goal else 'MISSED'} | {extra:.1f} |")
        print(rows[-1], flush=True)
    return rows


def scipy_table() -> list[str]:
    import scipy.signal

    rng = np.random.default_rng(1)
    image = rng.standard_normal((512, 512))
    rows = ["| case | method | engine ms | scipy.signal.correlate2d ms | speed-up | goal |",
            "|---|---|---:|---:|---:|---|"]
    for size, goal in ((3, None), (31, 50.0)):
        k = rng.standard_normal((size, size))
        method = choose_method((1, 1, 512, 512), (1, 1, size, size))
        ours = median_time(lambda k=k: correlate2d(image, k))
        theirs = median_time(lambda k=k: scipy.signal.correlate2d(image, k, mode="valid"),
                             min_runs=3, min_seconds=0.2, warmup=1)
        np.testing.assert_allclose(correlate2d(image, k), scipy.signal.correlate2d(image, k, mode="valid"),
                                   atol=1e-8)
        speedup = theirs / ours
        goal_text = f">= {goal:g}x {'met' if speedup >= goal else 'MISSED'}" if goal else "-"
        rows.append(f"| 512x512, {size}x{size} kernel (float64, valid) | {method} | {ours * 1e3:.2f} | "
                    f"{theirs * 1e3:.2f} | {speedup:.1f}x | {goal_text} |")
        print(rows[-1], flush=True)
    return rows


def sweep() -> None:
    """Time every strategy over kernel sizes, for the direct/im2col/FFT switch of method='auto'."""
    rng = np.random.default_rng(2)
    cases = [("1 image 256x256, 1->1", (1, 1, 256, 256), 1, 1),
             ("8 images 64x64, 8->8", (8, 8, 64, 64), 8, 1),
             ("8 images 64x64, depthwise 8", (8, 8, 64, 64), 8, 8)]
    print("| case | kernel | im2col ms | shift ms | fft ms | auto picks |")
    print("|---|---|---:|---:|---:|---|")
    for name, xs, o, groups in cases:
        x = rng.standard_normal(xs, dtype=np.float32)
        for size in (3, 5, 7, 9, 11, 13, 15, 21, 31):
            k = rng.standard_normal((o, xs[1] // groups, size, size), dtype=np.float32)
            times = {}
            for method in ("im2col", "shift", "fft"):
                times[method] = median_time(
                    lambda x=x, k=k, g=groups, m=method: correlate2d(x, k, groups=g, method=m),
                    min_runs=3, min_seconds=0.2, warmup=1)
            pick = choose_method(xs, k.shape, groups=groups)
            best = min(times, key=times.get)
            print(f"| {name} | {size}x{size} | {times['im2col'] * 1e3:.2f} | {times['shift'] * 1e3:.2f} | "
                  f"{times['fft'] * 1e3:.2f} | {pick}{'' if pick == best else f' (best: {best})'} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="kernel-size sweep of the strategies")
    args = parser.parse_args()
    print(f"kernelscope engine benchmark: {THREADS} threads, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs; medians after warm-up")
    if args.sweep:
        sweep()
        return
    layer_table()
    print()
    scipy_table()


if __name__ == "__main__":
    main()
