"""The commands under torchrun (2 processes) write what one process writes; a killed pass resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_scale_passes import torchrun

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _scale_cli import commands  # noqa: E402

sys.path.remove(str(HERE))


@pytest.fixture(scope="module")
def one_process(scale_run, tmp_path_factory):
    """The three commands run once in this process: the reference."""
    from click.testing import CliRunner

    from kernelscope.cli import cli

    run, images, masks = scale_run
    out = tmp_path_factory.mktemp("one")
    for args in commands(str(out), str(run), str(images), str(masks), str(run / "ood.npy")):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return out


def _rows(path: Path, key: str = "channels") -> list[dict]:
    return json.loads(path.read_text())[key]


def _assert_rows_close(two: list[dict], one: list[dict]) -> None:
    assert len(two) == len(one) > 0
    for a, b in zip(two, one, strict=True):
        assert a.keys() == b.keys()
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-6, abs=0), key
            else:
                assert a[key] == value, key


def test_commands_under_torchrun_write_what_one_process_writes(scale_run, one_process, tmp_path):
    run, images, masks = scale_run
    done = torchrun([str(HERE / "_scale_cli.py"), str(tmp_path), str(run), str(images), str(masks),
                     str(run / "ood.npy")])
    assert done.stdout.count("top-3 patches of 4 channels") == 1  # only rank 0 reports (and writes)
    assert done.stdout.count("read at features.1") == 1
    with np.load(tmp_path / "patches" / "patches.npz") as two, np.load(one_process / "patches" / "patches.npz") as one:
        for key in ("image_index", "position", "crops"):
            np.testing.assert_array_equal(two[key], one[key])
        np.testing.assert_allclose(two["values"], one["values"], rtol=1e-6)
    assert json.loads((tmp_path / "patches" / "patches.json").read_text())["data"]["processes"] == 2
    _assert_rows_close(_rows(tmp_path / "dissect" / "dissect.json"), _rows(one_process / "dissect" / "dissect.json"))
    _assert_rows_close(_rows(tmp_path / "shift" / "shift.json"), _rows(one_process / "shift" / "shift.json"))
    assert not (tmp_path / "patches" / "checkpoint").exists()
    # an image folder, read by a worker process on each rank: the unreadable file skipped and counted once
    folder_two = json.loads((tmp_path / "folder" / "patches.json").read_text())
    folder_one = json.loads((one_process / "folder" / "patches.json").read_text())
    assert folder_two["data"]["n_skipped"] == folder_one["data"]["n_skipped"] == 1
    assert folder_two["data"]["skipped"][0]["index"] == 7 and folder_two["n_images"] == 23
    assert [c["image_index"] for c in folder_two["channels"]] == [c["image_index"] for c in folder_one["channels"]]
    assert "1 unreadable skipped" in done.stdout
    two, one = (json.loads((o / "correlation" / "correlation.json").read_text())["templates"]
                for o in (tmp_path, one_process))
    for side in ("trained", "init"):
        for layer in ("features.5",):
            a, b = (np.array(t[side][layer]["r2"], dtype=float) for t in (two, one))  # None (dead unit): NaN
            np.testing.assert_allclose(a, b, rtol=1e-6)
            assert np.isfinite(b).any()
    assert done.stdout.count("rank 0 of 2 computed the maps") == 1
    assert (tmp_path / "maps" / "maps.json").is_file()


def test_a_killed_pass_resumes_to_the_uninterrupted_result(scale_run, one_process, tmp_path, cli_runner):
    run, images, masks = scale_run
    args = commands(str(tmp_path), str(run), str(images), str(masks), str(run / "ood.npy"))[1]  # dissect
    env = {**os.environ, "KERNELSCOPE_PROGRESS": "0", "KERNELSCOPE_TEST_KILL_AFTER_CHECKPOINT": "1"}
    killed = subprocess.run([sys.executable, "-m", "kernelscope", *args, "--checkpoint-every", "2"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == 75, killed.stdout + killed.stderr  # died right after its first checkpoint
    saved = tmp_path / "dissect" / "checkpoint" / "dissect-features.0.rank0of1.npz"
    assert saved.is_file() and not (tmp_path / "dissect" / "dissect.json").exists()

    other = [a if a != "3" else "4" for a in args]  # --permutations 4: another pass
    refused = cli_runner(*other, "--resume")
    assert refused.exit_code == 2
    assert "was written for another pass" in refused.output and len(refused.output.strip().splitlines()) == 1

    (saved.parent / "dissect-features.0.rank0of2.npz").write_bytes(saved.read_bytes())
    moved = saved.with_name("moved.npz")
    saved.rename(moved)  # as if two processes had written it: resuming with one is refused
    refused = cli_runner(*args, "--resume")
    assert refused.exit_code == 2 and "another number of processes than 1" in refused.output, refused.output
    moved.rename(saved)
    (saved.parent / "dissect-features.0.rank0of2.npz").unlink()

    resumed = cli_runner(*args, "--resume", "--checkpoint-every", "2")
    assert resumed.exit_code == 0, resumed.output
    _assert_rows_close(_rows(tmp_path / "dissect" / "dissect.json"), _rows(one_process / "dissect" / "dissect.json"))
    assert not saved.exists()  # the checkpoints go once the results are written


def test_resume_without_a_saved_state_is_one_line(scale_run, tmp_path, cli_runner):
    run, images, _ = scale_run
    result = cli_runner("patches", run, "--images", images, "--resume", "--out", tmp_path)
    assert result.exit_code == 2
    assert "--resume: no saved state" in result.output
