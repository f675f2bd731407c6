"""Fixtures of the channel analyses: a small face/non-face run directory, trained here in ~2 s."""

from __future__ import annotations

import numpy as np
import pytest


def train_face_run(path, *, epochs: int = 8, width: int = 8, seed: int = 0):
    """Train a tiny TinyVGG on the bundled faces data and write a run directory by the contract."""
    import torch

    from kernelscope.data import load_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster here than two fighting (measured)
    try:
        return _train(path, epochs, width, seed, data=load_dataset("faces", seed=seed))
    finally:
        torch.set_num_threads(threads)


def _train(path, epochs, width, seed, data):
    import torch

    from kernelscope.models.layers import conv_layer_names
    from kernelscope.models.zoo import build_model
    from kernelscope.train import rundir

    torch.manual_seed(seed)
    kwargs = {"in_channels": 1, "num_classes": 2, "input_size": [25, 25], "width": width, "depth": 2}
    model = build_model("tinyvgg", **{**kwargs, "input_size": (25, 25)})
    layers = conv_layer_names(model)
    manifest = rundir.new_manifest(config={"epochs": epochs, "test_fraction": 0.2}, model={"name": "tinyvgg",
                                   "kwargs": kwargs}, dataset={**data.summary(), "split_seed": seed},
                                   conv_layers=layers, seed=seed)
    x_train = torch.from_numpy(data.normalise(data.x_train))
    y_train = torch.from_numpy(data.y_train)
    probe = data.normalise(data.x_test[:4])
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]  # SGD with momentum, by hand (torch.optim imports dynamo: +3 s)

    def record(epoch):
        model.eval()
        with torch.no_grad():
            rundir.write_kernels(path, {n: dict(model.named_modules())[n].weight.numpy() for n in layers},
                                 epoch=epoch)
            from kernelscope.analysis.hooks import layer_outputs

            rundir.write_feature_maps(path, epoch, layer_outputs(model, probe, layers))
        rundir.write_checkpoint(path, epoch, {"model": model.state_dict(), "epoch": epoch, "config": {}})

    rundir.write_probe(path, probe, data.x_test[:4], data.y_test[:4])
    record(0)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, v, g in zip(params, velocity, grads, strict=True):
                    v.mul_(0.9).add_(g)
                    p.sub_(0.05 * v)
        record(epoch)
        model.eval()
        with torch.no_grad():
            accuracy = (model(torch.from_numpy(data.normalise(data.x_test))).argmax(1).numpy() == data.y_test).mean()
        manifest["metrics"].append({"epoch": epoch, "test_acc": float(accuracy)})
        manifest["epochs_completed"] = epoch
    manifest["status"] = "complete"
    rundir.write_manifest(path, manifest)
    return path


@pytest.fixture(scope="session")
def face_run_factory():
    """:func:`train_face_run` itself, for a test that needs a run of other epochs or width (a test cannot import
    this conftest by name: with several conftest.py files in the suite, ``import conftest`` finds another)."""
    return train_face_run


@pytest.fixture(scope="session")
def face_run(tmp_path_factory):
    """A complete run directory: tinyvgg (width 8) trained 8 epochs on the bundled faces."""
    return train_face_run(tmp_path_factory.mktemp("face_run"))


@pytest.fixture
def tiny_net():
    """Conv(1->2, 3x3) -> ReLU -> MaxPool(2) -> Conv(2->3, 3x3), seeded random weights."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 3)).eval()


@pytest.fixture
def images(rng):
    return rng.standard_normal((20, 1, 12, 12)).astype(np.float32)
