"""A run directory survives kills, damage, a second writer and divergence (the hostile-input sweep)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kernelscope.errors import KernelscopeError
from kernelscope.train import TrainConfig, load_run, rundir, train

SMALL = dict(data="digits", model="tinyvgg", epochs=2, train_limit=96, batch_size=32, n_probe=4, progress=False,
             shift=1, record_every_steps=2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict[str, str]:
    env = {**os.environ, "KERNELSCOPE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return env


def _same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _assert_same_run(resumed, whole) -> None:
    """Metrics (but the seconds), every kernel file and every checkpoint equal an uninterrupted run's."""
    assert resumed.manifest["status"] == "complete" and resumed.manifest["epochs_completed"] == whole.config["epochs"]
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in resumed.metrics]
    assert strip == [{k: v for k, v in m.items() if k != "seconds"} for m in whole.metrics]
    assert resumed.epochs == whole.epochs and resumed.steps == whole.steps
    assert resumed.feature_map_epochs == whole.feature_map_epochs
    for epoch in whole.epochs:
        for name, value in whole.kernels(epoch).items():
            assert resumed.kernels(epoch, name).tobytes() == value.tobytes()
        for name, value in whole.feature_maps(epoch).items():
            assert resumed.feature_maps(epoch)[name].tobytes() == value.tobytes()
    for step in whole.steps:
        for name, value in whole.kernels(step=step).items():
            assert resumed.kernels(step=step)[name].tobytes() == value.tobytes()
    assert resumed.checkpoint_epochs == whole.checkpoint_epochs
    for epoch in whole.checkpoint_epochs:
        assert _same_tensors(resumed.checkpoint(epoch), whole.checkpoint(epoch)), f"checkpoint of epoch {epoch}"
    last = resumed.path / "checkpoints" / "last.pt"
    assert last.read_bytes() == (resumed.path / "checkpoints" / f"epoch_{whole.epochs[-1]:03d}.pt").read_bytes()
    assert not [p for p in resumed.path.rglob("*.tmp")]


KILLER = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from kernelscope.train import TrainConfig, rundir, train

    config, root, points = TrainConfig(**json.loads(sys.argv[1])), sys.argv[2], json.loads(sys.argv[3])
    for k in points:  # one child per kill point: it dies right after its k-th file is in place
        pid = os.fork()
        if pid == 0:
            count = [0]
            def wrote(path):
                count[0] += 1
                if count[0] == k:
                    os._exit(9)
            rundir._wrote = wrote
            train(config, os.path.join(root, f"kill_{k}"))
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(k, os.waitstatus_to_exitcode(status), flush=True)
""")


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_kill_after_any_write_of_an_epoch_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch, backend):
    """Kill (os._exit, no clean-up) after each file of epoch 1 and after the last commit; --resume must end
    with the metrics, kernels, maps and checkpoints of a run that was never killed."""
    values = dict(SMALL, lr_schedule="constant") if backend == "torch" else dict(
        SMALL, data="mnist", model="lenet5", train_limit=64, backend="numpy", lr_schedule="constant",
        optimizer="sgd", lr=0.05, test_fraction=0.05)
    config = TrainConfig(**values)
    written: list[str] = []
    monkeypatch.setattr(rundir, "_wrote", lambda path: written.append(Path(path).relative_to(tmp_path / "whole")
                                                                       .as_posix()))
    whole = train(config, tmp_path / "whole")
    monkeypatch.undo()
    first = written.index("kernels/epoch_001.npz") - 1  # the step snapshot in epoch 1 comes before it
    assert written[first] == "kernels/step_000002.npz"
    commit = written.index("checkpoints/epoch_001.pt")
    assert written[commit:commit + 3] == ["checkpoints/epoch_001.pt", "checkpoints/last.pt", "manifest.json"]
    # every write of epoch 1 (step snapshot, kernels, maps, checkpoint, last.pt swap, manifest), and the
    # kill between the last epoch's commit and the "complete" status
    points = [k + 1 for k in range(first, commit + 3)] + [len(written) - 1]
    done = subprocess.run([sys.executable, "-c", KILLER, json.dumps(values), str(tmp_path), json.dumps(points)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [x for k in points for x in (str(k), "9")]
    for k in points:
        killed = tmp_path / f"kill_{k}"
        resumed = train(config, killed, resume=True)
        _assert_same_run(resumed, whole)


def test_leftover_tmp_files_and_a_truncated_last_pt_are_repaired_on_resume(tmp_path):
    config = TrainConfig(**SMALL)
    whole = train(config, tmp_path / "whole")

    class Kill:
        def on_epoch_end(self, state):
            raise KeyboardInterrupt("killed")

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(config, out, callbacks=[Kill()])
    leftovers = [out / ".manifest.json.k1x2.tmp", out / "kernels" / ".epoch_002.npz.abcd.tmp",
                 out / "checkpoints" / ".last.pt.4242.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    last = out / "checkpoints" / "last.pt"
    intact = last.read_bytes()
    last.unlink()  # a copy interrupted half-way (file systems without hard links copy last.pt)
    last.write_bytes(intact[:100])
    resumed = train(config, out, resume=True)
    assert not any(path.exists() for path in leftovers)
    _assert_same_run(resumed, whole)


def test_resume_from_a_damaged_committed_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "r"
    train(TrainConfig(**dict(SMALL, epochs=1)), out)
    (out / "checkpoints" / "epoch_001.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(KernelscopeError, match=r"^cannot resume '.*' from epoch 1: cannot read checkpoint "
                                               r"'.*epoch_001\.pt': .*; use --force to start over$"):
        train(TrainConfig(**dict(SMALL, epochs=1)), out, resume=True)


def test_runs_show_says_when_a_manifest_contradicts_itself(cli_runner, tmp_path):
    out = tmp_path / "r"
    train(TrainConfig(**dict(SMALL, epochs=1)), out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["epochs_completed"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    shown = cli_runner("runs", "show", out)
    assert shown.exit_code == 0
    assert ("status     inconsistent manifest: epochs_completed is 99 but the config asks for 1 epochs; "
            "epochs_completed is 99 but the metrics list 1 epochs (it says complete  (99 of 1 epochs))\n"
            ) in shown.output
    assert "complete  (99 of 1 epochs)" not in shown.output.replace("(it says complete  (99 of 1 epochs))", "")
    assert any("inconsistent manifest: epochs_completed is 99" in p for p in load_run(out).problems)


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from kernelscope.train import TrainConfig, train

    class Hold:  # epoch 0 is committed; then wait (holding the run directory) until killed
        def on_train_begin(self, state):
            Path(sys.argv[2]).write_text("ready")
            time.sleep(120)

    train(TrainConfig(data="digits", model="tinyvgg", epochs=1, train_limit=64, n_probe=4, progress=False),
          sys.argv[1], callbacks=[Hold()])
""")


def test_one_writer_per_run_directory_and_a_crashed_writer_never_blocks_resume(cli_runner, tmp_path):
    out, ready = tmp_path / "run", tmp_path / "ready"
    errors = tmp_path / "holder.err"
    with open(errors, "wb") as stderr:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(ready)], env=_env(),
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, "the training process never started"
            time.sleep(0.1)
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        message = (f"Error: run directory '{out}' is being written by another kernelscope process "
                   f"(pid {holder.pid}); wait for it to finish, or choose another --out\n")
        tiny = ["--data", "digits", "--model", "tinyvgg", "--epochs", "1", "--train-limit", "64"]
        for extra in (["--resume"], ["--force", *tiny], tiny):
            result = cli_runner("train", "--out", out, *extra)
            assert (result.exit_code, result.output) == (2, message), extra
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up, the kernel drops the lock
        holder.wait()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    result = cli_runner("train", "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert load_run(out).manifest["status"] == "complete"


def test_divergence_stops_with_status_failed(cli_runner, tmp_path):
    out = tmp_path / "nan"
    result = cli_runner("train", "--data", "digits", "--model", "tinyvgg", "--epochs", "2", "--train-limit", "96",
                        "--lr", "1e30", "--out", out)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("Error: training diverged at step ")
    assert result.output.rstrip().endswith("; lower the learning rate; the last good checkpoint is "
                                           f"{out / 'checkpoints' / 'epoch_000.pt'}")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["epochs_completed"] == 0
    assert manifest["error"].startswith("training diverged at step ")
    assert all(np.isfinite(v).all() for v in load_run(out).kernels(0).values())


@pytest.mark.parametrize("args, message", [
    (["--epochs", str(10**20)], "Error: Invalid value for '--epochs': 100000000000000000000 is not in the range "
                                "x<=10000.\n"),
    (["--lr", "inf"], "Error: Invalid value for '--lr': 'inf' is not a finite number.\n"),
    (["--lr", "1e999"], "Error: Invalid value for '--lr': '1e999' is not a finite number.\n"),
    (["--weight-decay", "nan"], "Error: Invalid value for '--weight-decay': 'nan' is not a finite number.\n"),
    (["--shift", "100000"], "Error: Invalid value for '--shift': 100000 is not in the range x<=64.\n"),
    (["--seed", str(2**64)], f"Error: Invalid value for '--seed': {2**64} is not in the range "
                             f"x<={2**63 - 1}.\n"),
])
def test_absurd_values_are_refused_before_anything_is_written(cli_runner, tmp_path, args, message):
    result = cli_runner("train", *args, "--out", tmp_path / "r")
    assert result.exit_code == 2 and result.output.endswith(message)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 10**20}, r"^epochs must be at most 10000, got 100000000000000000000$"),
    ({"lr": float("inf")}, r"^lr must be a finite number, got inf$"),
    ({"weight_decay": float("nan")}, r"^weight_decay must be a number >= 0, got nan$"),
    ({"seed": 2**64}, r"^seed must be at most 9223372036854775807, got 18446744073709551616$"),
])
def test_absurd_values_are_refused_by_the_library(tmp_path, kwargs, message):
    with pytest.raises(KernelscopeError, match=message):
        train(TrainConfig(**dict(SMALL, **kwargs)), tmp_path / "r")
    assert not (tmp_path / "r").exists()
