"""``kernelscope parts``: files written, numbers in them, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

FAST = ("--limit", "12", "--boot", "100", "--controls", "4", "--top", "1")


def test_parts_on_onet_writes_table_figure_and_summary(cli_runner, tmp_path):
    result = cli_runner("parts", "onet", "--parts", "eyes,mouth", *FAST, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("eyes: ")
    assert "detector(s) of 64 channels in prelu3 (PReLU after conv conv3)" in result.output
    data = json.loads((tmp_path / "parts.json").read_text())
    assert data["layer"] == "conv3" and data["n_images"] == 12 and data["parts"] == ["eyes", "mouth"]
    assert len(data["table"]) == 2 * 64
    assert data["settings"]["fill"] == "zero" and data["settings"]["n_controls"] == 4
    eyes = data["summary"]["eyes"]
    assert eyes["n_detectors"] >= 1  # ONet's conv3 has eye channels even on 12 faces
    assert eyes["output"]["intact"] > 0.9
    csv = (tmp_path / "parts.csv").read_text().splitlines()
    assert csv[0].startswith("layer,part,channel,") and len(csv) == 1 + 2 * 64
    assert (tmp_path / "parts.png").stat().st_size > 10_000
    # the control: the same protocol on ONet at PyTorch's default init, summarised beside the trained numbers
    init = data["init"]["summary"]["eyes"]
    assert "initialisation" in data["init"]["what"]
    assert init["n_detectors"] <= eyes["n_detectors"]
    assert "at init " in result.output.splitlines()[0]


def test_parts_no_init_skips_the_control(cli_runner, tmp_path):
    result = cli_runner("parts", "onet", "--parts", "eyes", *FAST, "--no-init", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "init" not in json.loads((tmp_path / "parts.json").read_text())
    assert "at init" not in result.output


def test_parts_with_haar_masks_and_user_masks(cli_runner, tmp_path):
    result = cli_runner("parts", "onet", "--masks", "haar", "--parts", "eyes", *FAST, "--out", tmp_path / "haar")
    assert result.exit_code == 0, result.output
    assert "Haar cascades" in json.loads((tmp_path / "haar" / "parts.json").read_text())["masks"]
    # user masks at the images' 25x25 size are scaled to ONet's 48x48 input
    masks = np.zeros((100, 25, 25), bool)  # one per bundled face; --limit 12 uses the first 12
    masks[:, 7:11, 4:9] = True
    np.savez(tmp_path / "m.npz", blob=masks)
    result = cli_runner("parts", "onet", "--masks", tmp_path / "m.npz", "--parts", "blob", *FAST,
                        "--out", tmp_path / "user")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("blob: ")


@pytest.mark.parametrize(("args", "message"), [
    (("--parts", "ears"),
     "Error: --parts: unknown part with landmarks 'ears'; did you mean 'eyes'? "
     "(valid: eyes, left_eye, mouth, nose, right_eye)"),
    (("--masks", "haar", "--parts", "nose"),
     "Error: part 'nose' has no mask (masks given: eyes, mouth); give a mask for it or choose among those"),
    (("--layer", "dense5"),
     "Error: layer 'dense5' (Linear) gives outputs of shape (256,) per image, not spatial maps (C, H, W); "
     "choose a convolution or pooling layer (conv layers: conv1, conv2, conv3, conv4)"),
    (("--radius", "0.45", "--parts", "eyes"),
     "Error: image too small for the occluder: a"),
    (("--fill", "grey"),
     "Error: --fill: expected 'zero', 'mean', 'blur' or a number, got 'grey'"),
    (("--images", "nowhere.npy"),
     "Error: --images: expected 'faces' or an .npy/.npz file of face crops, got 'nowhere.npy'"),
])
def test_parts_errors_are_one_line(cli_runner, tmp_path, args, message):
    result = cli_runner("parts", "onet", *FAST, *args, "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith(message)
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_parts_rejects_masks_of_the_wrong_size(cli_runner, tmp_path):
    np.savez(tmp_path / "m.npz", eyes=np.ones((12, 10, 10), bool))
    result = cli_runner("parts", "onet", "--masks", tmp_path / "m.npz", "--parts", "eyes", *FAST,
                        "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.output == ("Error: --masks: mask 'eyes' has shape (12, 10, 10); expected (N, H, W) at the images' "
                             "size (25, 25) or the model's input size (48, 48)\n")


def test_parts_unknown_source(cli_runner, tmp_path):
    result = cli_runner("parts", "no-such-model", "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith("Error: source 'no-such-model' does not exist (give a run directory or a model")


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory):
    """A tiny run on the bundled faces (tinyvgg, 1 epoch): the parts command on a run directory."""
    import torch

    from kernelscope.train import TrainConfig, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig(data="faces", model="tinyvgg", epochs=1, train_limit=160, batch_size=32, n_probe=4,
                             progress=False)
        return train(config, tmp_path_factory.mktemp("parts_run") / "run").path
    finally:
        torch.set_num_threads(before)


def test_parts_on_a_run_directory(cli_runner, faces_run, tmp_path):
    result = cli_runner("parts", faces_run, "--parts", "eyes", *FAST, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "parts.json").read_text())
    manifest = json.loads((faces_run / "manifest.json").read_text())
    assert data["layer"] == manifest["conv_layers"][-1]  # default: the deepest conv layer
    assert data["n_images"] == 12 and data["source"].startswith("run ")
    assert 0.0 <= data["summary"]["eyes"]["output"]["intact"] <= 1.0


def test_parts_target_class(cli_runner, faces_run, tmp_path):
    result = cli_runner("parts", faces_run, "--parts", "eyes", "--target", "nonface", *FAST, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "p(nonface)" in result.output
    assert json.loads((tmp_path / "parts.json").read_text())["target_class"] == "nonface"
    result = cli_runner("parts", faces_run, "--parts", "eyes", "--target", "fase", *FAST, "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output == ("Error: --target: unknown class 'fase'; did you mean 'face', 'nonface'? (valid: face, nonface); "
                             "or a class index\n")
