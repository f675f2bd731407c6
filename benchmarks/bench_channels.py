"""Speed and memory of the streaming channel passes (top-k patches, Network Dissection).

Baseline, measured in the same process on the same data: a plain forward pass of the
whole model (no hooks, ``torch.no_grad``) over the same batches. Goals (issue 6):
images/s of each pass >= 80% of the baseline; peak traced memory (tracemalloc: NumPy
and Python allocations) for the dataset repeated 10x within 10% of the dataset once.
The dissection pass is ``dissect_layer`` on the trained model with its permutation null
(what ``dissect`` runs once per model: ``kernelscope dissect`` runs it again on the
initialisation control). Tensors that torch allocates (the layer's outputs, among them
the up to 16 MiB of outputs the dissection holds back) are not traced.

Models: the zoo's TinyVGG for 25x25 faces (width 16, the faces demo's shape) and
MTCNN's ONet (48x48 RGB), both as shipped/initialised (speed does not depend on training).
Data: the bundled faces (lfw_subset faces + non-face patches), 860 images.

Run: ``.venv/bin/python benchmarks/bench_channels.py [--repeats 5]``. Timings on a shared
machine are noisy: medians after a warm-up.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # NumPy and torch share the process (FINDINGS.md)
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _stream import BATCH, Repeated  # noqa: E402


class TiledMasks:
    """Masks of ``Repeated`` data, indexable like an array (index modulo the base length)."""

    def __init__(self, base: np.ndarray, times: int):
        self.base, self.times = base, times
        self.shape = (len(base) * times, *base.shape[1:])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        return self.base[np.asarray(index) % len(self.base)]


def median_time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_forward(model, data):
    with torch.no_grad():
        for batch in Repeated(data, 1):
            model(torch.from_numpy(batch))


def peak_memory(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_model(name, model, layer, data, masks, repeats):
    from kernelscope.analysis.dissect import dissect_layer
    from kernelscope.analysis.toppatches import top_patches

    n = len(data)
    base = median_time(lambda: plain_forward(model, data), repeats)
    topk = median_time(lambda: top_patches(model, layer, data, k=9, batch_size=BATCH), repeats)
    dis = median_time(lambda: dissect_layer(model, layer, data, masks, n_permutations=20, batch_size=BATCH),
                      repeats)
    passes = dissect_layer(model, layer, data, masks, n_permutations=20, batch_size=BATCH)["passes"]
    print(f"\n{name}, layer {layer}, {n} images, batch {BATCH}")
    print(f"  plain forward (baseline)   {n / base:10.0f} img/s")
    print(f"  top-k patches (k=9)        {n / topk:10.0f} img/s   {base / topk:6.0%} of baseline")
    print(f"  dissection ({passes} pass{'es' if passes > 1 else ''}, 20 permutations, {len(masks)} concepts)"
          f" {n / dis:7.0f} img/s   {base / dis:6.0%} of baseline")

    def topk_stream(times):
        return lambda: top_patches(model, layer, Repeated(data, times), k=9, n_images=n * times)

    def dissect_stream(times):
        tiled = {k: TiledMasks(v, times) for k, v in masks.items()}
        return lambda: dissect_layer(model, layer, Repeated(data, times), tiled, n_permutations=20)

    for label, make in (("top-k", topk_stream), ("dissection", dissect_stream)):
        make(1)()  # warm-up allocations
        once, tenfold = peak_memory(make(1)), peak_memory(make(10))
        print(f"  peak memory {label:<11} x1 {once / 2**20:7.2f} MiB   x10 {tenfold / 2**20:7.2f} MiB   "
              f"ratio {tenfold / once:5.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from kernelscope.data import load_dataset
    from kernelscope.data.face_masks import template_masks
    from kernelscope.models.zoo import build_model

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of {args.repeats} after warm-up")
    data = load_dataset("faces")
    x = data.normalise(np.concatenate([data.x_train, data.x_test]))  # (860, 1, 25, 25)
    masks = template_masks(len(x))  # eyes and mouth; which masks does not change the speed
    tiny = build_model("tinyvgg", in_channels=1, num_classes=2, input_size=(25, 25), width=16).eval()
    bench_model("tinyvgg (width 16)", tiny, "features.7", x, masks, args.repeats)
    try:
        from kernelscope.models.onet import load_onet
    except ImportError:  # pragma: no cover - ONet ships with kernelscope
        return
    onet = load_onet().eval()
    x48 = np.repeat(torch.nn.functional.interpolate(torch.from_numpy(x), size=(48, 48), mode="bilinear",
                                                    align_corners=False).numpy(), 3, axis=1)
    masks48 = template_masks(len(x), (48, 48))
    bench_model("MTCNN ONet (48x48 RGB)", onet, "conv3", x48, masks48, args.repeats)


if __name__ == "__main__":
    main()
