"""Each kind of data-set pass, two processes under torchrun (CPU, gloo) against one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent


def torchrun(args: list[str], *, timeout: int = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2`` on ``args``; a failure shows the workers' output."""
    env = {**os.environ, "KERNELSCOPE_PROGRESS": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{error.stdout}\n{error.stderr}")
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def test_two_processes_equal_one_for_every_pass(tmp_path):
    torchrun([str(HERE / "_scale_passes.py"), str(tmp_path / "two.npz")])
    sys.path.insert(0, str(HERE))
    try:
        import torch
        from _scale_passes import compute

        from kernelscope.train.distributed import Context

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = compute(Context())
        finally:
            torch.set_num_threads(before)
    finally:
        sys.path.remove(str(HERE))
    with np.load(tmp_path / "two.npz") as two:
        assert int(two["world_size"]) == 2
        assert set(two.files) - {"world_size"} == set(one)
        # top-k sets (and their order, crops, positions) equal
        for key in ("top_index", "top_position", "top_n"):
            np.testing.assert_array_equal(two[key], one[key], err_msg=key)
        np.testing.assert_array_equal(two["top_crops"], one["top_crops"])
        assert int(two["fallback_passes"]) == int(one["fallback_passes"]) == 3  # the fallback ran, merged
        for key in sorted(one):  # every floating result within 1e-6 relative
            np.testing.assert_allclose(two[key], one[key], rtol=1e-6, atol=0, err_msg=key)
    # and the comparison can fail: the passes found something (not all zeros or all equal)
    assert one["dissect_trained_iou"].max() > 0.05 and np.ptp(one["shift_trained_auroc"]) > 0.05
