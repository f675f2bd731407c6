"""The maps, patches, rf, dissect and shift commands on a trained run: outputs, numbers and errors."""

from __future__ import annotations

import json

import numpy as np


def test_maps(cli_runner, face_run, tmp_path):
    result = cli_runner("maps", face_run, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "4 layer(s) of run" in result.output
    assert (tmp_path / "feature_maps.png").stat().st_size > 0
    assert (tmp_path / "epochs_features.0.png").stat().st_size > 0
    summary = json.loads((tmp_path / "maps.json").read_text())
    assert summary["layers"]["features.0"]["shape"] == [8, 25, 25]
    assert summary["epochs"]["features.0"]["epochs"] == list(range(9))
    with np.load(tmp_path / "feature_maps.npz") as maps:
        assert sorted(maps.files) == ["features.0", "features.2", "features.5", "features.7"]


def test_patches(cli_runner, face_run, tmp_path):
    result = cli_runner("patches", face_run, "--layer", "features.5", "-k", "3", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "top-3 patches of 8 channels of features.6 (ReLU after conv features.5) over 172 images (faces test)" in result.output
    data = json.loads((tmp_path / "patches.json").read_text())
    assert data["receptive_field"]["size"] == [10, 10]
    values = np.array([c["values"] for c in data["channels"]])
    assert (np.diff(values, axis=1) <= 0).all()  # most activating first
    assert (tmp_path / "patches_features.5.png").is_file()


def test_rf(cli_runner, face_run, tmp_path):
    result = cli_runner("rf", face_run, "--layer", "features.7", "--limit", "16", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "r_l = r_{l-1} + (k_l - 1) * d_l * j_{l-1}" in result.output
    assert "-> PASS" in result.output
    data = json.loads((tmp_path / "rf.json").read_text())
    sizes = {row["layer"]: row["size"][0] for row in data["layers"]}
    assert sizes == {"features.0": 3, "features.2": 5, "features.4": 6, "features.5": 10, "features.7": 14,
                     "features.9": 16}
    assert data["locality"]["max_change_outside"] == 0.0
    assert 0 < data["effective"]["ratio"][0] < 1.5
    assert (tmp_path / "rf.csv").read_text().startswith("layer,kind,kernel,stride")


def test_dissect_with_builtin_face_masks(cli_runner, face_run, tmp_path):
    result = cli_runner("dissect", face_run, "--layer", "features.5", "--permutations", "3", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("read at features.6 (ReLU after conv features.5)\neyes: best channel ")
    assert "masks: eyes " in result.output and " cascade + " in result.output
    data = json.loads((tmp_path / "dissect.json").read_text())
    assert data["n_images"] == 100 and data["summary"]["init"] is not None
    counts = data["mask_sources"]["eyes"]
    assert counts["cascade"] + counts["template"] == 100 and counts["cascade"] >= 85
    assert len((tmp_path / "dissect.csv").read_text().splitlines()) == 1 + 2 * 8


def test_shift_faces_vs_objects(cli_runner, face_run, tmp_path):
    result = cli_runner("shift", face_run, "--bootstrap", "50", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "go quiet on objects" in result.output
    for score in ("max_softmax", "max_logit", "energy", "mahalanobis"):
        assert f"  {score}" in result.output and "(init: " in result.output
    data = json.loads((tmp_path / "shift.json").read_text())
    assert data["n_in"] == 100 and data["n_out"] == 660 and data["init"] is not None
    assert len(data["channels"]) == 8


def test_errors_are_one_line_exit_2(cli_runner, face_run, tmp_path):
    result = cli_runner("patches", face_run, "--layer", "features.99", "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith("Error: unknown layer 'features.99'; did you mean ")
    assert "(valid: classifier, classifier.0, classifier.1, features, features.0, " in result.output
    assert result.output.count("\n") == 1

    np.savez(tmp_path / "masks.npz", eyes=np.zeros((7, 25, 25), dtype=bool))
    result = cli_runner("dissect", face_run, "--masks", tmp_path / "masks.npz", "--out", tmp_path)
    assert (result.exit_code, result.output) == (2, "Error: masks: 'eyes' has 7 masks but there are 100 images\n")

    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 25, 25), dtype=np.float32))
    result = cli_runner("patches", face_run, "--images", tmp_path / "empty.npy", "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output == f"Error: image set '{tmp_path / 'empty.npy'}' has no images (0 given); give at least one image\n"

    result = cli_runner("shift", face_run, "--id", "faces", "--ood", "faces", "--out", tmp_path)
    assert (result.exit_code, result.output) == (2, "Error: the out-of-distribution set is identical to the "
                                                    "in-distribution set (all 100 images also occur in it); "
                                                    "give different data\n")

    result = cli_runner("maps", tmp_path / "nothing", "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output == (f"Error: source '{tmp_path / 'nothing'}' does not exist (give a run directory or a "
                             "model file)\n")

    result = cli_runner("shift", face_run, "--ood", "bikes", "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith("Error: unknown image set 'bikes'")
