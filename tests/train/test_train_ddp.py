"""Two processes under torchrun (gloo, CPU) give the same kernels as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from kernelscope.train import TrainConfig, load_run, train

ARGS = ["--data", "digits", "--model", "large-kernel", "--epochs", "2", "--train-limit", "200",
        "--batch-size", "32", "--shift", "1", "--device", "cpu"]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    env = {**os.environ, "KERNELSCOPE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "kernelscope", "train", *ARGS, "--out", str(tmp_path / "ddp")]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"torchrun did not finish in 240 s:\n{error.stdout}\n{error.stderr}")
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert done.stdout.count("test accuracy") == 1  # only rank 0 reports (and writes)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train(TrainConfig(data="digits", model="large-kernel", epochs=2, train_limit=200, batch_size=32,
                                shift=1, device="cpu", progress=False), tmp_path / "one")
    finally:
        torch.set_num_threads(before)
    ddp = load_run(tmp_path / "ddp")
    assert ddp.manifest["status"] == "complete" and ddp.epochs == [0, 1, 2]
    for epoch in ddp.epochs:
        for name, value in one.kernels(epoch).items():
            np.testing.assert_allclose(ddp.kernels(epoch, name), value, rtol=1e-5, atol=1e-6)
    # and training moved the kernels well beyond that tolerance
    assert np.abs(one.kernels(2, "features.0") - one.kernels(0, "features.0")).max() > 1e-3
    for a, b in zip(ddp.metrics, one.metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["test_acc"] == b["test_acc"]
