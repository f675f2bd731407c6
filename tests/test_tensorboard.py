"""TensorBoard event files from training, read back with TensorBoard's own reader and checked against the run."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kernelscope.cli import cli
from kernelscope.errors import KernelscopeError
from kernelscope.train import TrainConfig, load_run, train
from kernelscope.train.tensorboard import SCALAR_TAGS, feature_map_grid, kernel_grid


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _events(log_dir) -> EventAccumulator:
    # size_guidance 0 = keep every event (the default samples images and histograms)
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0,
                                                           "tensors": 0})
    events.Reload()
    return events


def _png(encoded: bytes, *, grey: bool = True) -> np.ndarray:
    """Decode an image summary; TensorBoard stores a grey image as three equal channels."""
    image = np.asarray(Image.open(io.BytesIO(encoded)))
    if grey:
        assert image.ndim == 3 and image.shape[2] == 3
        assert (image == image[..., :1]).all()
        return image[..., 0]
    return image


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    config = TrainConfig(data="digits", model="tinyvgg", epochs=2, train_limit=160, batch_size=32, n_probe=4,
                         progress=False, tensorboard=str(root / "events"))
    run = train(config, root / "run")
    return run, _events(root / "events")


def test_scalars_are_the_manifests_metrics(board):
    run, events = board
    assert set(SCALAR_TAGS.values()) <= set(events.Tags()["scalars"])
    for key, tag in SCALAR_TAGS.items():
        got = {e.step: e.value for e in events.Scalars(tag)}
        want = {m["epoch"]: m[key] for m in run.manifest["metrics"]}
        assert sorted(got) == [1, 2]
        for epoch, value in want.items():
            assert got[epoch] == pytest.approx(value, rel=1e-6)  # stored as float32


def test_kernel_grids_are_the_recorded_kernels(board):
    run, events = board
    first = run.manifest["conv_layers"][0]
    images = events.Images(f"kernels/{first}")
    assert [e.step for e in images] == [0, 1, 2]  # the initialisation and each epoch
    for e in images:
        kernels = run.kernels(e.step, first)  # (O, 1, kh, kw)
        decoded = _png(e.encoded_image_string)
        np.testing.assert_array_equal(decoded, kernel_grid(kernels))
        # independent of kernel_grid: the strongest weight of kernel 0 is the brightest or darkest cell
        o, c, kh, kw = kernels.shape
        s = max(1, 28 // max(kh, kw))
        tile = decoded[:kh * s:s, :kw * s:s].astype(int)  # kernel 0, one pixel per cell
        k0 = kernels[0, 0]
        assert tile.flat[np.argmax(k0)] == tile.max() and tile.flat[np.argmin(k0)] == tile.min()
        assert np.array_equal(np.sign(tile - 128) * (np.abs(k0 / np.abs(kernels).max()) > 0.01),
                              np.sign(k0) * (np.abs(k0 / np.abs(kernels).max()) > 0.01))


def test_probe_feature_maps_are_the_recorded_maps(board):
    run, events = board
    for layer in run.manifest["conv_layers"]:
        images = events.Images(f"featuremaps/{layer}")
        assert [e.step for e in images] == [0, 1, 2]
        for e in images:
            maps = run.feature_maps(e.step)[layer]  # (P, O, H, W)
            decoded = _png(e.encoded_image_string)
            np.testing.assert_array_equal(decoded, feature_map_grid(maps))
            p, o, h, w = maps.shape
            assert decoded.shape == (min(p, 4) * (h + 1) - 1, min(o, 16) * (w + 1) - 1)


def test_weight_histograms_count_every_kernel_value(board):
    run, events = board
    for layer in run.manifest["conv_layers"]:
        last = events.Histograms(f"weights/{layer}")[-1]
        kernels = run.kernels(2, layer)
        assert last.step == 2
        assert last.histogram_value.num == kernels.size
        assert last.histogram_value.min == pytest.approx(float(kernels.min()))
        assert last.histogram_value.max == pytest.approx(float(kernels.max()))


def test_grids_by_hand():
    colour = np.zeros((1, 3, 1, 2))
    colour[0, 0, 0, 0], colour[0, 2, 0, 1] = 2.0, -2.0  # red +L at left, blue -L at right
    assert kernel_grid(colour, scale=1).tolist() == [[[255, 128, 128], [128, 128, 0]]]
    constant = np.full((1, 1, 2, 2), 3.0)
    assert (feature_map_grid(constant) == 128).all()  # a constant map is mid-grey, not a division by zero
    with pytest.raises(KernelscopeError, match=r"kernel_grid: kernels must have shape \(O, C, kh, kw\), got \(3, 3\)"):
        kernel_grid(np.zeros((3, 3)))


def test_cli_tensorboard_option_and_resume(tmp_path):
    out, events = tmp_path / "run", tmp_path / "events"
    args = ["train", "--data", "digits", "--model", "tinyvgg", "--epochs", "1", "--train-limit", "64",
            "--batch-size", "32", "--lr-schedule", "constant", "--out", str(out), "--tensorboard", str(events)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    # a resumed run adds its epochs to the same folder (and may point it elsewhere: not a config change)
    result = CliRunner().invoke(cli, ["train", "--out", str(out), "--resume", "--epochs", "2",
                                      "--tensorboard", str(events)])
    assert result.exit_code == 0, result.output
    acc = _events(events)
    run = load_run(out)
    assert [e.step for e in acc.Scalars("accuracy/test")] == [1, 2]
    assert [e.value for e in acc.Scalars("accuracy/test")] == pytest.approx(
        [m["test_acc"] for m in run.manifest["metrics"]])
    assert [e.step for e in acc.Images(f"kernels/{run.manifest['conv_layers'][0]}")] == [0, 1, 2]
    assert run.manifest["config"]["tensorboard"] == str(events)


def test_numpy_backend_writes_the_same_tags(tmp_path):
    config = TrainConfig(data="digits", model="tinyvgg", epochs=1, train_limit=64, batch_size=32, n_probe=4,
                         progress=False, backend="numpy", lr_schedule="constant", tensorboard=str(tmp_path / "tb"))
    run = train(config, tmp_path / "run")
    events = _events(tmp_path / "tb")
    layers = run.manifest["conv_layers"]
    assert set(events.Tags()["images"]) == {f"kernels/{layers[0]}", *(f"featuremaps/{n}" for n in layers)}
    assert events.Scalars("accuracy/test")[0].value == pytest.approx(run.metrics[0]["test_acc"], rel=1e-6)
    kernels = events.Images(f"kernels/{layers[0]}")[-1]
    np.testing.assert_array_equal(_png(kernels.encoded_image_string), kernel_grid(run.kernels(1, layers[0])))
