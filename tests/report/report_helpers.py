"""A hand-written run directory (NumPy only) for the report tests: fast and independent of training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HOSTILE = "<script>alert('owned')</script>"


def write_fake_run(root: Path, *, epochs: int = 3, status: str = "complete", classes=None,
                   seed: int = 0) -> Path:
    """A run with two conv layers, kernels and feature maps at epochs 0..epochs, a probe and metrics."""
    rng = np.random.default_rng(seed)
    classes = classes or ["zero", HOSTILE]
    root.mkdir(parents=True, exist_ok=True)
    (root / "kernels").mkdir(exist_ok=True)
    (root / "featuremaps").mkdir(exist_ok=True)
    probe = rng.random((4, 1, 12, 12)).astype(np.float32)
    np.savez(root / "probe.npz", images=(probe - 0.5) / 0.25, raw=probe, labels=np.array([0, 1, 0, 1]))
    k1 = rng.normal(scale=0.05, size=(8, 1, 5, 5)).astype(np.float32)
    k2 = rng.normal(scale=0.1, size=(6, 8, 3, 3)).astype(np.float32)
    yy, xx = np.mgrid[-2:3, -2:3]
    edge = np.sign(xx) * np.exp(-(xx**2 + yy**2) / 4.0)  # an edge detector the kernels drift towards
    metrics = []
    for epoch in range(epochs + 1):
        t = epoch / max(epochs, 1)
        kernels = {"conv1": (k1 * (1 - t) + t * edge[None, None]).astype(np.float32), "features.2": k2 * (1 + t)}
        np.savez(root / "kernels" / f"epoch_{epoch:03d}.npz", **kernels)
        maps = {"conv1": rng.normal(size=(4, 8, 8, 8)).astype(np.float32),
                "features.2": rng.normal(size=(4, 6, 6, 6)).astype(np.float32)}
        np.savez(root / "featuremaps" / f"epoch_{epoch:03d}.npz", **maps)
        if epoch:
            metrics.append({"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5 + 0.1 * epoch,
                            "test_loss": 1.1 / epoch, "test_acc": 0.45 + 0.1 * epoch, "seconds": 0.5})
    manifest = {
        "format": "kernelscope-run", "format_version": 1, "kernelscope_version": "0.1.0", "status": status,
        "config": {"epochs": epochs, "lr": 0.002}, "model": {"name": "handmade", "kwargs": {}},
        "dataset": {"name": "fake", "n_train": 40, "n_test": 10, "classes": classes, "image_shape": [1, 12, 12],
                    "mean": [0.5], "std": [0.25], "split_seed": 0},
        "seed": 0, "conv_layers": ["conv1", "features.2"], "epochs_completed": epochs, "metrics": metrics,
        "versions": {"python": "3", "numpy": np.__version__},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root
