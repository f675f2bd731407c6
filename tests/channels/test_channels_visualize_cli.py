"""``kernelscope visualize``: a run through the CLI, and bad input as one line with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from kernelscope.models.zoo import build_model

    folder = tmp_path_factory.mktemp("vis")
    torch.manual_seed(0)
    net = build_model("tinyvgg", in_channels=1, num_classes=2, input_size=16, width=4)
    torch.save(net.state_dict(), folder / "net.pt")
    images = np.random.default_rng(0).random((12, 1, 16, 16)).astype(np.float32)
    np.save(folder / "images.npy", images)
    return folder


def test_visualize_writes_figure_and_numbers(cli_runner, model_files, tmp_path):
    from kernelscope.models.layers import conv_layer_names
    from kernelscope.sources import open_source

    layer = conv_layer_names(open_source(str(model_files / "net.pt"), arch="tinyvgg").model)[0]
    result = cli_runner("visualize", model_files / "net.pt", "--arch", "tinyvgg", "--layer", layer,
                        "--channels", "0-1", "--steps", "3", "--images", model_files / "images.npy", "-k", "2",
                        "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "beat the init control" in result.output
    data = json.loads((tmp_path / "visualize.json").read_text())
    assert [u["channel"] for u in data["units"]] == [0, 1]
    assert set(data["projections"]) == {"guided", "deconvnet"}
    assert (tmp_path / f"visualize_{layer}.png").is_file()


@pytest.mark.parametrize(("extra", "message"), [
    (["--layer", "nope"], "Error: unknown layer"),
    (["--channels", "99"], "out of range"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--layer", "features.1"], "not a Conv2d"),
])
def test_bad_input_exits_2(cli_runner, model_files, tmp_path, extra, message):
    result = cli_runner("visualize", model_files / "net.pt", "--arch", "tinyvgg", "--images",
                        model_files / "images.npy", "--out", tmp_path, *extra)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_weights_only_source_has_no_gradients(cli_runner, model_files, tmp_path):
    result = cli_runner("visualize", model_files / "net.pt", "--images", model_files / "images.npy",
                        "--out", tmp_path)
    assert result.exit_code == 2
    assert "no gradients" in result.output and len(result.output.strip().splitlines()) == 1


def test_direction_objective_from_the_cli(cli_runner, model_files, tmp_path):
    result = cli_runner("visualize", model_files / "net.pt", "--arch", "tinyvgg", "--channels", "0-1",
                        "--objective", "direction", "--steps", "3", "--images", model_files / "images.npy", "-k", "2",
                        "--starts", "2", "--reduce", "mean", "--no-projections", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "visualize.json").read_text())
    assert data["objective"] == "direction" and data["projections"] == {}
    assert data["settings"]["starts"] == 2 and data["settings"]["reduce"] == "mean"
    assert "spatial max" in data["ratio_definition"]
    assert ", direction, 3 steps: median reached / data-set max" in result.output


def _unconvertible_onnx(path):
    """An ONNX graph with an operator the converter does not know (Erf): readable, not runnable."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "conv.weight")
    nodes = [helper.make_node("Conv", ["x", "conv.weight"], ["c"]), helper.make_node("Erf", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_onnx_that_cannot_be_converted_is_one_line(cli_runner, model_files, tmp_path):
    _unconvertible_onnx(tmp_path / "m.onnx")
    result = cli_runner("visualize", tmp_path / "m.onnx", "--images", model_files / "images.npy", "--out",
                        tmp_path / "out")
    assert result.exit_code == 2
    assert "'Erf'" in result.output and "not supported" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out" / "visualize.json").exists()


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory, face_run_factory):
    return face_run_factory(tmp_path_factory.mktemp("three"), epochs=3, width=4)


def test_over_training_on_a_tiny_run(three_epochs):
    from kernelscope.analysis.visualize import over_training, patch_stability
    from kernelscope.sources import open_source

    src = open_source(three_epochs)
    x, _, _ = src.images("test", limit=60)
    layer = src.conv_layers[-1]
    evolution = over_training(src.run, layer, x, channels=[0, 1], mean=src.mean, std=src.std, steps=3)
    assert evolution.epochs == [0, 1, 2, 3] and len(evolution.images) == 4
    assert evolution.images[0].shape == (2, *x.shape[1:])
    stability = patch_stability(src.run, x, k=4)
    assert stability.layers == src.conv_layers and stability.epochs == [0, 1, 2, 3]
    for layer in stability.layers:
        overlaps = stability.jaccard[layer]
        assert overlaps[-1] == 1.0 and all(0.0 <= v <= 1.0 for v in overlaps)
        settled = stability.settled[layer]
        assert settled is not None and all(v >= 0.8 for e, v in zip(stability.epochs, overlaps, strict=True) if e >= settled)
        before = [v for e, v in zip(stability.epochs, overlaps, strict=True) if e == settled - 1]
        assert all(v < 0.8 for v in before)  # the epoch before it (if any) is below the threshold


def test_over_training_from_the_cli(cli_runner, three_epochs, tmp_path):
    result = cli_runner("visualize", three_epochs, "--channels", "0-1", "--steps", "2", "--limit", "40", "-k", "3",
                        "--no-projections", "--over-training", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "visualize.json").read_text())
    assert data["over_training"]["epochs"] == [0, 1, 2, 3] and set(data["stability"]["settled"]) == set(
        data["stability"]["layers"])
    assert "patch sets stable (Jaccard >= 0.8 with the final epoch) from epoch" in result.output
    assert any(tmp_path.glob("visualize_epochs_*.png"))


def test_over_training_needs_a_run(cli_runner, model_files, tmp_path):
    result = cli_runner("visualize", model_files / "net.pt", "--arch", "tinyvgg", "--images",
                        model_files / "images.npy", "--over-training", "--out", tmp_path)
    assert result.exit_code == 2 and "Error: --over-training needs a run directory as SOURCE" in result.output
