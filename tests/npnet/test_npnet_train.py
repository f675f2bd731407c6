"""`train(backend="numpy")` writes a standard run directory that every analysis can read; divergence stops cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kernelscope.errors import KernelscopeError
from kernelscope.train import TrainConfig, load_run, train


def _config(**overrides):
    values = dict(data="mnist", model="lenet5", epochs=2, batch_size=32, train_limit=64, optimizer="sgd",
                  lr=0.05, momentum=0.9, n_probe=4, backend="numpy", lr_schedule="constant", progress=False,
                  test_fraction=0.05)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "np"
    train(_config(shift=1, record_every_steps=2), out)
    return out


def test_numpy_run_is_a_standard_run_directory(numpy_run):
    run = load_run(numpy_run)
    assert run.manifest["status"] == "complete" and run.manifest["backend"] == "numpy"
    assert run.epochs == [0, 1, 2] and run.steps == [2, 4]
    assert run.conv_layers == ["features.0", "features.3"]
    assert [m["epoch"] for m in run.metrics] == [1, 2]
    assert all(np.isfinite(m["train_loss"]) and 0 <= m["test_acc"] <= 1 for m in run.metrics)
    k0, k2 = run.kernels(0, "features.0"), run.kernels(2, "features.0")
    assert k0.shape == (6, 1, 5, 5) and not np.allclose(k0, k2)  # the kernels were trained
    images, raw, labels = run.probe()
    assert images.shape == (4, 1, 28, 28) and labels.shape == (4,)


def test_numpy_run_loads_into_the_torch_zoo_model_and_computes_the_same_maps(numpy_run):
    import torch

    from kernelscope.train.recorder import probe_feature_maps

    run = load_run(numpy_run)
    model = run.model()  # the zoo lenet5 with the NumPy-trained weights
    images, _, _ = run.probe()
    maps = probe_feature_maps(model, run.conv_layers, torch.from_numpy(images))
    recorded = run.feature_maps(2)
    for name in run.conv_layers:
        np.testing.assert_allclose(recorded[name], maps[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(run.kernels(2, "features.0"),
                                  model.features[0].weight.detach().numpy())


def test_same_seed_same_kernels_and_same_initialisation_as_torch_backend(numpy_run, tmp_path):
    """The NumPy run starts from exactly the torch back end's initialisation (seeded zoo model)."""
    again = tmp_path / "again"
    train(_config(shift=1, record_every_steps=2, epochs=1, record_feature_maps=False), again)
    np.testing.assert_array_equal(load_run(again).kernels(1, "features.3"),
                                  load_run(numpy_run).kernels(1, "features.3"))
    import torch

    from kernelscope.models.zoo import build_model

    torch.manual_seed(0)
    init = build_model("lenet5", in_channels=1, num_classes=10, input_size=(28, 28))
    np.testing.assert_array_equal(load_run(numpy_run).kernels(0, "features.0"),
                                  init.features[0].weight.detach().numpy())


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from kernelscope.npnet import step as npnet_step

    real = npnet_step.softmax_cross_entropy
    calls = {"n": 0}

    def poisoned(logits, labels):  # the 3rd training step (first step of epoch 2) produces a NaN loss
        loss, grad = real(logits, labels)
        if len(labels) != 32:  # evaluation batches are not training steps
            return loss, grad
        calls["n"] += 1
        return (float("nan"), grad) if calls["n"] == 3 else (loss, grad)

    monkeypatch.setattr(npnet_step, "softmax_cross_entropy", poisoned)
    out = tmp_path / "diverged"
    with pytest.raises(KernelscopeError, match=(
            r"^training diverged at step 3 \(epoch 2\): the loss is nan; lower the learning rate; "
            r"the last good checkpoint is .*epoch_001\.pt$")):
        train(_config(epochs=3, record_feature_maps=False), out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["epochs_completed"] == 1
    assert "step 3" in manifest["error"]
    assert load_run(out).checkpoint_epochs == [0, 1]
    assert load_run(out).model() is not None  # the last good weights still load


def test_exploding_learning_rate_is_caught_as_non_finite(tmp_path):
    with pytest.raises(KernelscopeError, match=r"^training diverged at step \d+ \(epoch 1\): "):
        train(_config(epochs=1, lr=1e12, momentum=0.0, record_feature_maps=False), tmp_path / "boom")


def test_unsupported_model_is_a_one_line_error(tmp_path):
    with pytest.raises(KernelscopeError, match=r"^model \(SmallResNet\) is not a plain sequence of layers"):
        train(_config(model="resnet-small", epochs=1), tmp_path / "resnet")


def test_cli_train_backend_numpy_and_its_one_line_errors(cli_runner, tmp_path):
    out = tmp_path / "cli"
    args = ("train", "--backend", "numpy", "--model", "lenet5", "--optimizer", "sgd", "--lr", "0.05",
            "--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--out", out)
    result = cli_runner(*args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("lenet5 on mnist: test accuracy ")
    assert load_run(out).manifest["backend"] == "numpy"
    again = cli_runner(*args)
    assert again.exit_code == 2
    assert again.output.startswith(f"Error: output directory {str(out)!r} already holds a run")
    bad = cli_runner("train", "--backend", "numpy", "--model", "resnet-small", "--epochs", "1",
                     "--train-limit", "32", "--out", tmp_path / "resnet")
    assert bad.exit_code == 2
    assert bad.output.startswith("Error: model (SmallResNet) is not a plain sequence of layers")
    assert "Traceback" not in bad.output


def test_resume_ends_where_an_uninterrupted_run_ends(numpy_run, tmp_path):
    """Stop after epoch 1, resume to epoch 2: weights, optimiser state and data order carry over exactly."""
    out = tmp_path / "resumed"
    train(_config(shift=1, record_every_steps=2, epochs=1), out)
    train(_config(shift=1, record_every_steps=2, epochs=2), out, resume=True)
    resumed, straight = load_run(out), load_run(numpy_run)
    assert resumed.epochs == [0, 1, 2] and resumed.manifest["status"] == "complete"
    for layer in straight.conv_layers:
        np.testing.assert_array_equal(resumed.kernels(2, layer), straight.kernels(2, layer))
    assert [m["train_loss"] for m in resumed.metrics] == [m["train_loss"] for m in straight.metrics]
    with pytest.raises(KernelscopeError, match=r"with a different config \(lr: run has 0\.05, now 0\.1\)"):
        train(_config(shift=1, record_every_steps=2, epochs=3, lr=0.1), out, resume=True)


def test_cli_divergence_is_exit_2_with_the_step(cli_runner, tmp_path):
    result = cli_runner("train", "--backend", "numpy", "--model", "lenet5", "--optimizer", "sgd", "--lr", "1e12",
                        "--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--out", tmp_path / "nan")
    assert result.exit_code == 2
    assert result.output.startswith("Error: training diverged at step ")
    assert result.output.rstrip().endswith("epoch_000.pt") and result.output.count("\n") == 1


def test_cli_resume_of_an_interrupted_numpy_run_equals_an_uninterrupted_run(cli_runner, tmp_path, monkeypatch):
    """`kernelscope train --backend numpy` interrupted in epoch 2, then `--resume`: the same final kernels."""
    from pathlib import Path

    from kernelscope.train import rundir

    args = ("train", "--backend", "numpy", "--model", "lenet5", "--optimizer", "sgd", "--lr", "0.05",
            "--epochs", "2", "--train-limit", "64", "--batch-size", "32", "--shift", "1")
    assert cli_runner(*args, "--out", tmp_path / "whole").exit_code == 0

    def interrupt(path):  # Ctrl-C after epoch 2's kernels, before its commit
        if Path(path).name == "epoch_002.npz" and Path(path).parent.name == "kernels":
            raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "_wrote", interrupt)
    cut = cli_runner(*args, "--out", tmp_path / "cut")
    assert (cut.exit_code, cut.output) == (1, "\nAborted!\n")  # click's answer to Ctrl-C
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "manifest.json").read_text())["status"] == "failed"
    result = cli_runner("train", "--out", tmp_path / "cut", "--resume")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("lenet5 on mnist: test accuracy ") and "after epoch 2" in result.output
    resumed, whole = load_run(tmp_path / "cut"), load_run(tmp_path / "whole")
    assert resumed.manifest["status"] == "complete" and resumed.manifest["backend"] == "numpy"
    for epoch in whole.epochs:
        for layer, value in whole.kernels(epoch).items():
            assert resumed.kernels(epoch, layer).tobytes() == value.tobytes()
    assert [m["test_loss"] for m in resumed.metrics] == [m["test_loss"] for m in whole.metrics]
