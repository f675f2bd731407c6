"""Helpers of the explorer tests: a small run directory written by hand with the run-directory writer.

The run's first layer starts as random kernels and moves, epoch by epoch, to oriented edge kernels
(so the epoch slider has something to show); its feature maps are computed with the engine. Its
directory name and class names are hostile HTML, which the page must show as text.
"""

from __future__ import annotations

import numpy as np

HOSTILE = "<img src=x onerror=window.__owned=true>"


def write_run(path, *, epochs: int = 3, width: int = 6, size: int = 5, seed: int = 0,
              classes: list[str] | None = None):
    """Write a complete run directory (manifest, probe, kernels and feature maps per epoch)."""
    from kernelscope.kernels import get_kernel
    from kernelscope.ops import correlate2d
    from kernelscope.train import rundir

    rng = np.random.default_rng(seed)
    classes = classes or ["plain", HOSTILE]
    raw = rng.random((4, 1, 12, 12)).astype(np.float32)  # (P, 1, 12, 12)
    raw[:, :, :, 6:] += 0.5  # a vertical edge in every probe image
    raw = np.clip(raw, 0, 1)
    images = (raw - 0.5) / 0.25
    labels = np.array([0, 1, 0, 1], dtype=np.int64)
    edge = get_kernel("sobel_x", size=size)  # (size, size)
    targets = np.stack([np.rot90(edge, k % 4) * (1 if k < 4 else -1) for k in range(width)])[:, None]
    targets = targets / np.abs(targets).max()  # (O, 1, size, size)
    init1 = 0.3 * rng.standard_normal((width, 1, size, size))
    init2 = 0.3 * rng.standard_normal((4, width, 3, 3))
    manifest = rundir.new_manifest(
        config={"epochs": epochs, "test_fraction": 0.2},
        model={"name": "handmade", "kwargs": {}},
        dataset={"name": "synthetic", "n_train": 8, "n_test": 4, "classes": classes,
                 "image_shape": [1, 12, 12], "mean": [0.5], "std": [0.25], "split_seed": 0},
        conv_layers=["conv1", "conv2"], seed=seed)
    rundir.prepare_run_dir(path)
    rundir.write_probe(path, images, raw, labels)
    for epoch in range(epochs + 1):
        t = epoch / max(epochs, 1)
        k1 = (1 - t) * init1 + t * targets  # (O, 1, size, size)
        k2 = init2 * (1 + t)  # (4, O, 3, 3)
        rundir.write_kernels(path, {"conv1": k1, "conv2": k2}, epoch=epoch)
        m1 = correlate2d(images.astype(np.float64), k1)  # (P, O, 8, 8)
        m2 = correlate2d(np.maximum(m1, 0), k2)  # (P, 4, 6, 6)
        rundir.write_feature_maps(path, epoch, {"conv1": m1, "conv2": m2})
        if epoch > 0:
            manifest["metrics"].append({"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5 + 0.1 * epoch,
                                        "test_loss": 1.2 / epoch, "test_acc": 0.45 + 0.1 * epoch,
                                        "seconds": 0.1})
            manifest["epochs_completed"] = epoch
    manifest["status"] = "complete"
    rundir.write_manifest(path, manifest)
    return path
