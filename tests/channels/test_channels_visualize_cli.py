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
