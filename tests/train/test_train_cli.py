"""`kernelscope train` and `kernelscope runs show`: thin commands, one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest
import torch

TINY = ["--data", "digits", "--model", "tinyvgg", "--epochs", "1", "--train-limit", "96", "--batch-size", "32"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_then_show(cli_runner, tmp_path):
    out = tmp_path / "run"
    result = cli_runner("train", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("tinyvgg on digits: test accuracy ") and str(out) in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["train_limit"] == 96 and manifest["config"]["preset"] == "plain"

    shown = cli_runner("runs", "show", out)
    assert shown.exit_code == 0
    assert "status     complete  (1 of 1 epochs)" in shown.output
    assert "conv     features.0               (10, 1, 3, 3)" in shown.output
    table = shown.output.split("epoch train_loss")[1].strip().splitlines()
    assert len(table) == 2 and table[1].split()[0] == "1"
    as_json = cli_runner("runs", "show", out, "--json")
    assert json.loads(as_json.output)["epochs_completed"] == 1


def test_resume_uses_the_runs_own_settings(cli_runner, tmp_path):
    out = tmp_path / "run"
    assert cli_runner("train", *TINY, "--lr-schedule", "constant", "--out", out).exit_code == 0
    result = cli_runner("train", "--out", out, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "after epoch 2" in result.output
    bad = cli_runner("train", "--out", out, "--resume", "--lr", "0.5")
    assert bad.exit_code == 2
    assert bad.output == (f"Error: cannot resume '{out}' with a different config (lr: run has 0.001, now 0.5); "
                          "use the run's settings or --force to start over\n")


def test_cosine_run_cannot_be_extended(cli_runner, tmp_path):
    out = tmp_path / "run"
    assert cli_runner("train", *TINY, "--out", out).exit_code == 0
    result = cli_runner("train", "--out", out, "--resume", "--epochs", "2")
    assert result.exit_code == 2 and "with a different config (epochs: run has 1, now 2)" in result.output


def test_preset_structure_values_reach_the_manifest(cli_runner, tmp_path):
    out = tmp_path / "s"
    result = cli_runner("train", "--preset", "structure", "--data", "digits", "--epochs", "1",
                        "--train-limit", "64", "--out", out)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert (config["preset"], config["optimizer"], config["init_scale"], config["shift"]) == ("structure", "adamw",
                                                                                            0.05, 2)


@pytest.mark.parametrize("args,message", [
    (["--data", "mnsit"], "Error: unknown dataset 'mnsit'; did you mean 'mnist'? (valid: animal-mnist, "
                          "cifar10:PATH, digits, faces, fashion-mnist, folder:PATH, idx:PATH, mnist)\n"),
    (["--model", "tinyvg"], "Error: unknown model 'tinyvg'; did you mean 'tinyvgg'? (valid: large-kernel, lenet5, "
                            "resnet-small, tinyvgg)\n"),
    (["--preset", "face"], "Error: unknown preset 'face'; did you mean 'faces'? (valid: faces, plain, structure)\n"),
    (["--epochs", "0"], "Error: epochs must be an integer >= 1, got 0\n"),
])
def test_bad_names_and_values(cli_runner, tmp_path, args, message):
    result = cli_runner("train", *args, "--out", tmp_path / "r")
    assert result.exit_code == 2 and result.output == message
    assert not (tmp_path / "r").exists()


def test_existing_run_refused(cli_runner, tmp_path):
    out = tmp_path / "run"
    assert cli_runner("train", *TINY, "--out", out).exit_code == 0
    before = (out / "manifest.json").read_bytes()
    result = cli_runner("train", *TINY, "--out", out)
    assert result.exit_code == 2
    assert result.output == (f"Error: output directory '{out}' already holds a run (complete, 1 epochs); "
                             "use --resume to continue it or --force to overwrite it\n")
    assert (out / "manifest.json").read_bytes() == before
    assert cli_runner("train", *TINY, "--out", out, "--force").exit_code == 0


def test_corrupt_user_data_is_one_line(cli_runner, tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"x")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5))
    result = cli_runner("train", "--data", f"idx:{tmp_path}", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert result.output.startswith("Error: file ") and "(truncated)" in result.output
    assert result.output.count("\n") == 1


def test_show_errors(cli_runner, tmp_path):
    result = cli_runner("runs", "show", tmp_path / "none")
    assert result.exit_code == 2 and result.output == f"Error: run directory '{tmp_path / 'none'}' does not exist\n"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text("{broken")
    result = cli_runner("runs", "show", tmp_path / "m")
    assert result.exit_code == 2 and result.output.startswith("Error: corrupt manifest ")
