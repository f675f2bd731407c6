"""A tiny run directory (seeded weights, no training: the passes need a network, not a good one),
images and masks, shared by the tests of sharded and resumed passes."""

from __future__ import annotations

import numpy as np
import pytest

N_IMAGES = 40


@pytest.fixture(scope="session")
def scale_run(tmp_path_factory):
    """``(run_dir, images.npy, masks.npz)``: tinyvgg (width 4) at epochs 0 and 1, 40 images (1, 25, 25)."""
    import torch

    from kernelscope.data import load_dataset
    from kernelscope.models.layers import conv_layer_names
    from kernelscope.models.zoo import build_model
    from kernelscope.train import rundir

    path = tmp_path_factory.mktemp("scale_run")
    data = load_dataset("faces", seed=0)
    kwargs = {"in_channels": 1, "num_classes": 2, "input_size": [25, 25], "width": 4, "depth": 2}
    manifest = rundir.new_manifest(config={"epochs": 1, "test_fraction": 0.2}, model={"name": "tinyvgg",
                                   "kwargs": kwargs}, dataset={**data.summary(), "split_seed": 0},
                                   conv_layers=[], seed=0)
    for epoch in (0, 1):
        torch.manual_seed(epoch)
        model = build_model("tinyvgg", **{**kwargs, "input_size": (25, 25)}).eval()
        layers = conv_layer_names(model)
        rundir.write_kernels(path, {n: dict(model.named_modules())[n].weight.detach().numpy() for n in layers},
                             epoch=epoch)
        rundir.write_checkpoint(path, epoch, {"model": model.state_dict(), "epoch": epoch, "config": {}})
    manifest.update(conv_layers=layers, status="complete", epochs_completed=1,
                    metrics=[{"epoch": 1, "test_acc": 0.5}])
    rundir.write_manifest(path, manifest)
    rng = np.random.default_rng(3)
    masks = np.zeros((N_IMAGES, 25, 25), dtype=bool)
    masks[np.arange(N_IMAGES), rng.integers(3, 20, N_IMAGES), 8:11] = True
    images = rng.random((N_IMAGES, 1, 25, 25)).astype(np.float32) * 0.6 + 0.4 * masks[:, None]
    np.save(path / "images.npy", images)
    np.save(path / "ood.npy", images[:, :, ::-1].copy() ** 2)
    np.savez(path / "masks.npz", stripe=masks)
    from PIL import Image

    folder = path / "folder"  # the same images as files, and one that is not an image
    folder.mkdir()
    for i, image in enumerate(images[:24]):
        Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "007.png").write_bytes(b"not a png")
    return path, path / "images.npy", path / "masks.npz"
