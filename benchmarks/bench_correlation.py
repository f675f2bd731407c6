"""Speed and memory of the linear-template pass (``kernelscope.analysis.correlation.layer_templates``).

Baseline, measured in the same process on the same batches: a plain forward pass of the whole model
(no hooks, ``torch.no_grad``). The template pass is the forward pass plus, per layer, the receptive-field
patches of 3x3 units per image and the float64 sums ``X^T X``, ``X^T y`` (and the ridge solve at the end).
Goals (issue 16): images/s >= 80% of the baseline; peak memory for the images repeated 10x within 10%
of the images once.

Memory is the peak resident set size (``ru_maxrss``) of a fresh child process that streams the images
(never materialised) through the pass, less its resident size after a warm-up on one batch: torch's own
allocations (the accumulators are torch tensors) are invisible to tracemalloc, so RSS is what counts.

Model: the zoo's TinyVGG for 25x25 faces (width 16, depth 2: 4 conv layers, the faces demo's shape) at
initialisation (speed does not depend on training); all 4 conv layers read at ``activation``.
Data: the bundled faces (860 images).

Run: ``.venv/bin/python benchmarks/bench_correlation.py [--repeats 3]``. Timings on a shared machine
are noisy: medians after a warm-up.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _stream import BATCH, Repeated  # noqa: E402


def setup():
    from kernelscope.data import load_dataset
    from kernelscope.models.layers import conv_layer_names
    from kernelscope.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("tinyvgg", in_channels=1, num_classes=2, input_size=(25, 25), width=16, depth=2).eval()
    data = load_dataset("faces", seed=0)
    images = data.normalise(np.concatenate([data.x_train, data.x_test])).astype(np.float32)
    return model, conv_layer_names(model), images


def forward(model, stream) -> None:
    with torch.no_grad():
        for batch in stream:
            model(torch.from_numpy(batch))


def templates(model, layers, stream) -> None:
    from kernelscope.analysis.correlation import layer_templates

    layer_templates(model, layers, stream, at="activation", batch_size=BATCH)


def child(times: int) -> None:
    model, layers, images = setup()
    templates(model, layers, Repeated(images[:BATCH * 5], 1))  # warm-up: imports, first allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    templates(model, layers, Repeated(images, times))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"times": times, "before_kib": before, "peak_kib": after}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    torch.set_num_threads(1)
    model, layers, images = setup()
    forward(model, Repeated(images, 1))
    templates(model, layers, Repeated(images, 1))
    plain, ours = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        forward(model, Repeated(images, 1))
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        templates(model, layers, Repeated(images, 1))
        ours.append(time.perf_counter() - start)
    n = len(images)
    base, mine = statistics.median(plain), statistics.median(ours)
    print(f"TinyVGG (4 conv layers, 25x25), {n} images, batch {BATCH}, 1 thread, median of {args.repeats}")
    print(f"  plain forward     {n / base:9.0f} images/s")
    print(f"  template pass     {n / mine:9.0f} images/s   ({base / mine:.0%} of the forward's speed)")
    peaks = {}
    for times in (1, 10):
        out = subprocess.run([sys.executable, __file__, "--child", str(times)], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        peaks[times] = json.loads(out.stdout.strip().splitlines()[-1])
    for times, p in peaks.items():
        print(f"  memory, {times:>2}x images ({n * times} images): peak RSS {p['peak_kib'] / 1024:.1f} MiB, "
              f"{(p['peak_kib'] - p['before_kib']) / 1024:.1f} MiB above the warm-up")
    print(f"  peak RSS 10x / 1x: {peaks[10]['peak_kib'] / peaks[1]['peak_kib']:.3f}")


if __name__ == "__main__":
    main()
