"""atlas_of: run directories (hand-written to the documented layout), models, files, bad input; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.analysis.atlas import atlas_of
from kernelscope.analysis.atlas.evolution import drift
from kernelscope.analysis.atlas.templates import gabor_template
from kernelscope.errors import KernelscopeError

N_NULL = 150


def _gabor_bank(o, c, size, seed=0):
    rng = np.random.default_rng(seed)
    g = np.stack([gabor_template((size, size), frequency=0.22, theta=t, phase=rng.uniform(-3, 3), sigma_u=1.6,
                                 sigma_v=1.8) for t in np.linspace(0, np.pi, o, endpoint=False)])
    return np.repeat(g[:, None], c, axis=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 4-epoch run of the zoo's large-kernel net whose first layer moves from its init to Gabors."""
    from kernelscope.models import build_model

    path = tmp_path_factory.mktemp("atlas") / "run"
    torch.manual_seed(0)
    model = build_model("large-kernel", in_channels=1, num_classes=10, input_size=28)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    weights = {n: dict(model.named_modules())[n].weight.detach().numpy().astype(np.float32) for n in names}
    first = weights[names[0]]
    target = 0.3 * _gabor_bank(*first.shape[:2], first.shape[2]).astype(np.float32)
    (path / "kernels").mkdir(parents=True)
    for epoch, a in enumerate([0.0, 0.6, 0.95, 1.0]):
        arrays = dict(weights)
        arrays[names[0]] = ((1 - a) * first + a * target).astype(np.float32)
        np.savez(path / "kernels" / f"epoch_{epoch:03d}.npz", **arrays)
    manifest = {"format": "kernelscope-run", "format_version": 1, "status": "complete", "config": {},
                "model": model.kernelscope_arch, "dataset": {"name": "mnist", "image_shape": [1, 28, 28]},
                "seed": 0, "conv_layers": names, "epochs_completed": 3, "metrics": []}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_run_directory_atlas_with_evolution_and_init_control(run_dir):
    state = torch.random.get_rng_state()
    result = atlas_of(run_dir, n_null=N_NULL)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random stream is untouched
    assert result.layer == "features.0" and result.epoch == 3 and result.shape == (16, 1, 7, 7)
    assert result.fractions["gabor-like"] == 1.0
    # init null: fresh initialisations of the same layer, large enough to set thresholds
    assert result.control_sizes["init"] >= N_NULL and "init" in result.threshold_nulls
    assert result.control_fractions["init"]["gabor-like"] <= 0.03
    ev = result.evolution
    assert ev.epochs == [0, 1, 2, 3]
    assert ev.fractions["gabor-like"][0] <= 0.125 and ev.fractions["gabor-like"][-1] == 1.0
    assert ev.median_match[-1] > ev.median_match[0] + 0.3
    assert np.all(np.diff(np.nanmedian(ev.distance, axis=1)) > 0)
    assert set(ev.settle_epoch.tolist()) <= {2, 3}
    # the recorded epoch-0 kernels give each kernel's distance from init
    assert all(r["init"]["distance"] > 0 for r in result.records)


def test_run_directory_epoch_and_layer(run_dir):
    early = atlas_of(run_dir, epoch=0, n_null=N_NULL, with_evolution=False)
    assert early.epoch == 0 and early.evolution is None
    assert early.fractions["gabor-like"] <= 0.125
    second = atlas_of(run_dir, layer="features.3", n_null=N_NULL, with_evolution=False)
    assert second.layer == "features.3" and second.shape[2:] == (3, 3)


def test_a_loaded_run_is_its_directory(run_dir):
    from kernelscope.train import load_run

    by_path = atlas_of(run_dir, epoch=0, n_null=N_NULL, with_evolution=False)
    by_run = atlas_of(load_run(run_dir), epoch=0, n_null=N_NULL, with_evolution=False)
    assert by_run.fractions == by_path.fractions and by_run.source == by_path.source
    with pytest.raises(KernelscopeError, match=r"got int$"):
        atlas_of(3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layer": "features.9"}, r"unknown conv layer 'features.9'; did you mean 'features.3', 'features.0'\? "
                              r"\(valid: features.0, features.3\)$"),
    ({"layer": "classifier"}, r"layer 'classifier' is a .*, not a convolution \(conv layers: features.0, features.3\)"),
    ({"epoch": 7}, r"epoch 7 not recorded in .* \(recorded kernel epochs: 0, 1, 2, 3\)"),
])
def test_run_directory_bad_layer_or_epoch(run_dir, kwargs, message):
    with pytest.raises(KernelscopeError, match=message):
        atlas_of(run_dir, n_null=N_NULL, **kwargs)


def test_model_object_uses_fresh_inits_as_the_init_null():
    net = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.Conv2d(6, 4, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(_gabor_bank(6, 3, 5)))
    state = torch.random.get_rng_state()
    result = atlas_of(net, n_null=N_NULL)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random stream is untouched
    assert result.layer == "0" and result.shape == (6, 3, 5, 5)
    assert result.control_sizes["init"] >= N_NULL
    assert result.counts["gabor-like"] >= 5
    assert all(r["colour"]["off_luminance"] == pytest.approx(0.0, abs=1e-6) for r in result.records)


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(1, 2, 3)
        self.c2 = nn.Conv2d(1, 2, 3)
        self.c3 = nn.Conv3d(1, 2, 3)
        self.fc = nn.Linear(2, 2)


@pytest.mark.parametrize(("layer", "message"), [
    ("c1", r"layer 'c1' is a Conv1d: 1-D and 3-D convolutions are not supported yet \(2-D conv layers: c2\)"),
    ("c3", r"layer 'c3' is a Conv3d: 1-D and 3-D convolutions are not supported yet"),
    ("fc", r"layer 'fc' is a Linear, not a convolution \(conv layers: c2\)"),
    ("c9", r"unknown conv layer 'c9'; did you mean 'c2'\? \(valid: c2\)$"),
])
def test_model_layer_errors(layer, message):
    with pytest.raises(KernelscopeError, match=message):
        atlas_of(_Mixed(), layer=layer, n_null=N_NULL)


def test_files_state_dict_and_unreadable(tmp_path):
    from kernelscope.models import build_model

    torch.manual_seed(1)
    net = build_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    path = tmp_path / "lenet.pt"
    torch.save(net.state_dict(), path)
    result = atlas_of(path, arch="lenet5", n_null=N_NULL)
    np.testing.assert_allclose(result.kernels, net.features[0].weight.detach().double().numpy())
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(KernelscopeError, match=r"broken.pt"):
        atlas_of(bad, arch="lenet5", n_null=N_NULL)
    # a file whose bytes happen to start like a pickle fails deep inside torch: still one line
    odd = tmp_path / "odd.pt"
    odd.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(KernelscopeError, match=r"odd.pt"):
        atlas_of(odd, n_null=N_NULL)
    with pytest.raises(KernelscopeError, match=r"source '.*missing.pt' does not exist \(give a run directory or a model file\)"):
        atlas_of(tmp_path / "missing.pt")
    with pytest.raises(KernelscopeError, match=r"epoch=2 applies to run directories only"):
        atlas_of(path, arch="lenet5", epoch=2)
    with pytest.raises(KernelscopeError, match=r"is not a run directory \(no manifest.json\)"):
        atlas_of(tmp_path)


def test_drift_settling_on_a_known_path():
    path = np.stack([np.zeros((2, 3)) + 1, [[2, 2, 2], [1, 1, 1]], [[3, 3, 3], [1, 1, 1]], [[3, 3, 3], [5, 1, 1]]])
    distance, cosine, settle = drift(path)  # (4, 2, 3): kernel 0 moves early, kernel 1 jumps last
    np.testing.assert_allclose(distance[:, 0], [0, 1, 2, 2])
    assert settle.tolist() == [2, 3]
    np.testing.assert_allclose(cosine[:, 0], 1.0)


def test_cli_on_a_run_directory(run_dir, tmp_path, cli_runner):
    out = tmp_path / "out"
    result = cli_runner("atlas", str(run_dir), "--out", str(out), "--n-null", "150")
    assert result.exit_code == 0, result.output
    assert "kernel atlas: 16 kernels of 1x7x7 (layer features.0, epoch 3)" in result.output
    assert "thresholds (p99 of the random, shuffled, init nulls" in result.output
    assert "gabor-like          16      1.00" in result.output
    assert "over training (epochs 0..3)" in result.output
    for name in ("atlas.json", "atlas.csv", "atlas_matches.png", "atlas_nulls.png", "atlas_evolution.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "atlas.json").read_text())
    assert data["counts"]["gabor-like"] == 16 and data["evolution"]["epochs"] == [0, 1, 2, 3]


@pytest.mark.parametrize(("args", "message"), [
    (["--layer", "features.1"], "Error: layer 'features.1' is a ReLU, not a convolution (conv layers: features.0, features.3)"),
    (["--epoch", "9"], "Error: epoch 9 not recorded in"),
    (["--percentile", "100"], "Error: Invalid value for '--percentile'"),
])
def test_cli_errors_exit_2_with_one_line(run_dir, tmp_path, cli_runner, args, message):
    result = cli_runner("atlas", str(run_dir), "--out", str(tmp_path / "o"), "--n-null", "50", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_missing_source(tmp_path, cli_runner):
    result = cli_runner("atlas", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert result.output.strip().endswith("does not exist (give a run directory or a model file)")


def test_onnx_file(tmp_path):
    import warnings

    from kernelscope.models import build_model

    torch.manual_seed(2)
    net = build_model("lenet5", in_channels=1, num_classes=10, input_size=28).eval()
    expected = net.features[0].weight.detach().double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporters' deprecation chatter is not under test
        torch.onnx.export(net, torch.zeros(1, 1, 28, 28), tmp_path / "net.onnx", dynamo=False)
    result = atlas_of(tmp_path / "net.onnx", n_null=N_NULL)
    assert result.layer == "features.0"
    np.testing.assert_allclose(result.kernels, expected, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def run_with_steps(run_dir, tmp_path_factory):
    """The same run, also recorded every 5 optimiser steps (the first layer moving towards Gabors)."""
    import shutil

    path = tmp_path_factory.mktemp("atlas_steps") / "run"
    shutil.copytree(run_dir, path)
    init = dict(np.load(path / "kernels" / "epoch_000.npz"))
    final = dict(np.load(path / "kernels" / "epoch_003.npz"))
    for step, a in ((5, 0.2), (10, 0.9), (15, 1.0)):
        arrays = {k: ((1 - a) * init[k] + a * final[k]).astype(np.float32) for k in init}
        np.savez(path / "kernels" / f"step_{step:06d}.npz", **arrays)
    return path


def test_evolution_over_recorded_steps(run_dir, run_with_steps, tmp_path, cli_runner):
    result = atlas_of(run_with_steps, over="steps", n_null=N_NULL)
    ev = result.evolution
    assert ev.unit == "step" and ev.epochs == [0, 5, 10, 15]
    assert ev.fractions["gabor-like"][-1] == 1.0 and ev.fractions["gabor-like"][0] <= 0.125
    assert set(ev.settle_epoch.tolist()) <= {10, 15}
    assert "over training (steps 0..15)" in result.summary_table()
    out = cli_runner("atlas", str(run_with_steps), "--steps", "--no-evolution", "--out", str(tmp_path / "a"),
                     "--n-null", "50")
    assert out.exit_code == 0 and "over training" not in out.output
    with pytest.raises(KernelscopeError, match=r"recorded no steps \(train with record_every_steps > 0"):
        atlas_of(run_dir, over="steps", n_null=N_NULL)
    with pytest.raises(KernelscopeError, match=r"over must be 'epochs' or 'steps', got 'step'"):
        atlas_of(run_dir, over="step", n_null=N_NULL)


def test_atlas_of_a_bare_state_dict_by_key(tmp_path):
    """No architecture needed for the weights: every 4-D weight is a conv layer, named by its key."""
    import torch

    from kernelscope.models.zoo import build_model

    net = build_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    torch.save({f"backbone.{k}": v for k, v in net.state_dict().items()}, tmp_path / "weights.pt")
    by_key = atlas_of(tmp_path / "weights.pt", layer="backbone.features.0.weight", n_null=50)
    by_layer = atlas_of(tmp_path / "weights.pt", layer="backbone.features.0", n_null=50)
    assert by_key.layer == by_layer.layer == "backbone.features.0" and by_key.shape == (6, 1, 5, 5)
    np.testing.assert_array_equal(by_key.kernels, net.features[0].weight.detach().double().numpy())
    with pytest.raises(KernelscopeError, match=r"unknown conv layer 'backbone.feature.0'.*backbone.features.0"):
        atlas_of(tmp_path / "weights.pt", layer="backbone.feature.0", n_null=50)
