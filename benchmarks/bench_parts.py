"""Speed of the occlusion part-selectivity pass on MTCNN's ONet.

Workload (issue 9): the 100 bundled ``lfw_subset`` faces, all channels of ONet's conv
layers, parts eyes/nose/mouth from ONet's landmarks, 8 control placements per image
and part: 1 + 3 x (1 + 8) = 28 variants per face, 2,800 forward images in all.

Measured in the same process:
- ``protocol``: :func:`kernelscope.analysis.parts.part_selectivity_layers` (all variants of a
  batch of faces in one forward pass, spatial maxima kept, 1,000 bootstrap resamples);
- ``forward only``: a plain ONet forward of the same 2,800 variant images (no hooks, no
  statistics), batched the same way: the floor the protocol is compared with;
- ``one forward per variant``: the naive loop, one forward pass per (face, variant) image,
  timed on the first 10 faces' 280 images and scaled to 100 faces.

Run: ``.venv/bin/python benchmarks/bench_parts.py [--repeats 3] [--threads 2]``. Medians after
a warm-up; a shared machine makes the absolute times noisy, the ratios less so.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # NumPy and torch share the process (FINDINGS.md)
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _median_time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="faces per forward pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from kernelscope.analysis.occlusion import occlude, onet_part_masks
    from kernelscope.analysis.parts import part_selectivity_layers
    from kernelscope.data.faces import lfw_faces
    from kernelscope.models.onet import load_onet, preprocess_faces

    faces = lfw_faces()  # (100, 1, 25, 25)
    net = load_onet()
    x = preprocess_faces(faces)  # (100, 3, 48, 48)
    parts = ["eyes", "nose", "mouth"]
    masks = onet_part_masks(faces, 48, parts=parts)
    layers = ["conv1", "conv2", "conv3", "conv4"]
    n_variants = 1 + len(parts) * (1 + 8)
    channels = 32 + 64 + 64 + 128

    def protocol():
        return part_selectivity_layers(net, x, masks, layers=layers, n_controls=8, n_boot=1000,
                                       batch_size=args.batch_size)

    # The same number of images, with occlusions in place (contents do not change the cost).
    variants = np.concatenate([x] + [occlude(x, masks[p]) for p in parts] * (n_variants // len(parts)))
    variants = torch.from_numpy(np.ascontiguousarray(variants[: len(x) * n_variants]))  # (2800, 3, 48, 48)
    step = args.batch_size * n_variants

    def forward_only():
        with torch.no_grad():
            for start in range(0, len(variants), step):
                net(variants[start:start + step])

    naive_images = 10 * n_variants

    def one_by_one():
        with torch.no_grad():
            for i in range(naive_images):
                net(variants[i:i + 1])

    t_protocol = _median_time(protocol, args.repeats)
    t_forward = _median_time(forward_only, args.repeats)
    t_naive = _median_time(one_by_one, args.repeats) * len(variants) / naive_images
    result = protocol()
    detectors = {p: len(result["conv3"].detectors(p)) for p in parts}

    print(f"ONet occlusion part selectivity: {len(x)} faces x {channels} channels ({', '.join(layers)}), "
          f"{len(parts)} parts x (1 + 8 controls) -> {len(variants)} forward images; "
          f"torch threads {args.threads}, {args.batch_size} faces per forward")
    print(f"  protocol (batched, with bootstrap) : {t_protocol:7.3f} s  ({1e3 * t_protocol / len(x):.1f} ms per face)")
    print(f"  forward only, same batches        : {t_forward:7.3f} s  -> protocol / forward = "
          f"{t_protocol / t_forward:.2f}x")
    print(f"  one forward per variant (naive)   : {t_naive:7.3f} s  (scaled from 10 faces) -> batched protocol is "
          f"{t_naive / t_protocol:.1f}x faster")
    print(f"  conv3 detectors: {detectors}")


if __name__ == "__main__":
    main()
