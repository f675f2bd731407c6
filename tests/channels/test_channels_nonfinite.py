"""NaN policy and scripted models (issue 21): non-finite activations and unhookable layers are one line each."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kernelscope.analysis.hooks import capture, count_hooks, layer_outputs
from kernelscope.analysis.shift import mahalanobis_fit
from kernelscope.data.face_masks import check_masks, load_masks
from kernelscope.errors import KernelscopeError


@pytest.fixture(scope="module")
def nan_run(face_run, tmp_path_factory):
    """The face run with every checkpoint's weights replaced by NaN (a diverged or damaged run)."""
    import torch

    path = tmp_path_factory.mktemp("nan") / "run"
    shutil.copytree(face_run, path)
    for checkpoint in (path / "checkpoints").glob("*.pt"):
        state = torch.load(checkpoint, weights_only=True)
        state["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                          for k, v in state["model"].items()}
        torch.save(state, checkpoint)
    return path


@pytest.mark.parametrize("command", ["maps", "patches", "shift", "dissect", "parts"])
def test_a_checkpoint_full_of_nans_is_one_line_and_writes_nothing(command, nan_run, cli_runner, tmp_path):
    result = cli_runner(command, nan_run, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: layer 'features.")
    assert "non-finite value(s) (NaN or inf)" in result.stderr
    assert "the model's weights are not finite (10 parameter tensor(s) hold NaN or inf: features.0.weight" \
        in result.stderr
    assert not (tmp_path / "out").exists()


def test_capture_refuses_non_finite_outputs_and_leaves_no_hook(tiny_net):
    import torch

    x = torch.zeros(1, 1, 12, 12)
    x[0, 0, 5, 5] = float("inf")
    with pytest.raises(KernelscopeError, match=r"^layer '0' gave \d+ non-finite value\(s\) .* the weights are "
                                               r"finite, so the inputs or the arithmetic overflowed"):
        layer_outputs(tiny_net, x.numpy(), "0")
    assert count_hooks(tiny_net) == 0
    with capture(tiny_net, "0", finite=False) as out:  # the check can be turned off
        tiny_net(x)
    assert not bool(out["0"].isfinite().all())


def test_mahalanobis_fit_refuses_non_finite_features_instead_of_an_svd_error():
    features = np.full((6, 3), np.nan)
    with pytest.raises(KernelscopeError, match=r"^Mahalanobis fit: 18 of 18 features are NaN or inf"):
        mahalanobis_fit(features, np.array([0, 0, 0, 1, 1, 1]))


def _scripted():
    import warnings

    import torch
    from torch import nn

    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.x; scripted models still run
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))


def test_layers_of_a_scripted_model_are_one_line_naming_what_works():
    import torch

    from kernelscope.analysis.receptive import receptive_fields

    scripted = _scripted()
    message = r"cannot read layer\(s\) '0' of a TorchScript \(scripted\) model: .*ONNX.*--arch"
    with pytest.raises(KernelscopeError, match=message):
        with capture(scripted, "0"):
            scripted(torch.zeros(1, 1, 5, 5))
    with pytest.raises(KernelscopeError, match=r"of a TorchScript \(scripted\) model"):
        receptive_fields(scripted, (1, 9, 9))


def test_a_scripted_model_inside_a_plain_module_leaves_no_hook():
    from torch import nn

    wrapper = nn.Sequential(_scripted())
    with pytest.raises(KernelscopeError, match="TorchScript"):
        with capture(wrapper, "0.0"):
            pass
    assert count_hooks(wrapper) == 0  # the pre-hook on the wrapper was removed too


@pytest.mark.parametrize("mask,message", [
    ([np.ones((2, 2)), np.ones((3, 3))], r"^masks: 'eyes' is ragged \(masks of different sizes\)"),
    (np.array([[["a"]]]), r"^masks: 'eyes' holds <U1 values \(an object, ragged or text array\)"),
    (np.array([np.ones(2), np.ones(3)], dtype=object), r"^masks: 'eyes' holds object values"),
])
def test_object_and_ragged_masks_are_one_line(mask, message):
    with pytest.raises(KernelscopeError, match=message):
        check_masks({"eyes": mask}, 2, (2, 2))
    with pytest.raises(KernelscopeError, match=message):
        load_masks({"eyes": mask})


def test_an_object_masks_file_is_one_line(tmp_path):
    np.savez(tmp_path / "m.npz", eyes=np.array([np.ones(2), np.ones(3)], dtype=object))
    with pytest.raises(KernelscopeError, match=r"^cannot read array 'eyes' of masks file '.*m.npz' as a .npy "
                                               r"array \(it holds Python objects"):
        load_masks(tmp_path / "m.npz")


def test_a_negative_epoch_is_refused_and_none_is_the_last(face_run):
    from kernelscope.train.rundir import Run

    run = Run(face_run)
    assert np.array_equal(run.kernels(None, "features.0"), run.kernels(run.epochs[-1], "features.0"))
    with pytest.raises(KernelscopeError, match=r"^epoch must be 0 or more, got -1 \(omit it for the last "
                                               r"recorded epoch, 8\)"):
        run.kernels(-1)
