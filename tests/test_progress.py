"""Progress: bars on a terminal, one line per finished step in a log, nothing with --quiet."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TRAIN = ["train", "--preset", "structure", "--epochs", "2", "--train-limit", "200", "--force"]


def _run(args: list[str], tmp_path, progress: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KERNELSCOPE_PROGRESS"}
    if progress is not None:
        env["KERNELSCOPE_PROGRESS"] = progress
    return subprocess.run([sys.executable, "-m", "kernelscope", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)


@pytest.mark.slow
def test_a_log_gets_one_line_per_epoch_and_quiet_gets_none(tmp_path):
    logged = _run([*TRAIN, "--out", str(tmp_path / "a")], tmp_path, None)  # stderr is a pipe, not a terminal
    assert logged.returncode == 0, logged.stderr
    assert "batch/s]" not in logged.stderr  # no tqdm redraws in a log
    epochs = [line for line in logged.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    for line in epochs:  # "epoch 1/2: 4/4 batch in 0.6 s, ...": every batch counted
        done, total = line.split(":")[1].split()[0].split("/")
        assert done == total and " batch in " in line
    quiet = _run(["--quiet", *TRAIN, "--out", str(tmp_path / "b")], tmp_path, None)
    assert quiet.returncode == 0 and not any(line.startswith("epoch ") for line in quiet.stderr.splitlines())
    assert quiet.stdout == logged.stdout.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    bars = _run(["--verbose", *TRAIN, "--out", str(tmp_path / "c")], tmp_path, None)
    assert bars.returncode == 0 and "batch/s]" in bars.stderr  # tqdm bars with their rate
    both = _run(["--quiet", "--verbose", "images"], tmp_path, None)
    assert both.returncode == 2 and "give --quiet or --verbose, not both" in both.stderr
