"""The recording training loop: run-directory contract, determinism, resume after a kill, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kernelscope.errors import KernelscopeError
from kernelscope.train import TrainConfig, load_run, preset, train
from kernelscope.train.loop import _augment, choose_probe
from kernelscope.train.recorder import probe_feature_maps


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kw) -> TrainConfig:
    values = dict(data="digits", model="tinyvgg", epochs=2, train_limit=160, batch_size=32, n_probe=4,
                  progress=False)
    values.update(kw)
    return TrainConfig(**values)


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(tiny(), tmp_path_factory.mktemp("run") / "r")
    finally:
        torch.set_num_threads(before)


def test_run_directory_contract(run):
    m = json.loads((run.path / "manifest.json").read_text())
    assert m["format"] == "kernelscope-run" and m["format_version"] == 1 and m["status"] == "complete"
    assert m["model"]["name"] == "tinyvgg" and m["dataset"]["name"] == "digits"
    assert m["dataset"]["n_train"] == 160 and m["dataset"]["image_shape"] == [1, 8, 8]
    assert m["conv_layers"] == ["features.0", "features.2", "features.5", "features.7"]
    assert m["epochs_completed"] == 2 and [r["epoch"] for r in m["metrics"]] == [1, 2]
    assert set(m["metrics"][0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
    assert set(m["versions"]) >= {"python", "numpy", "torch", "kernelscope"}
    assert m["config"] == tiny().to_dict() and m["seed"] == 0
    assert run.epochs == [0, 1, 2] and run.checkpoint_epochs == [0, 1, 2] and run.feature_map_epochs == [0, 1, 2]
    assert (run.path / "checkpoints" / "last.pt").read_bytes() == (run.path / "checkpoints" / "epoch_002.pt").read_bytes()
    assert not list(run.path.rglob("*.tmp"))
    k = run.kernels(0)
    assert {n: v.shape for n, v in k.items()} == {"features.0": (10, 1, 3, 3), "features.2": (10, 10, 3, 3),
                                                  "features.5": (10, 10, 3, 3), "features.7": (10, 10, 3, 3)}
    assert all(v.dtype == np.float32 for v in k.values())
    assert run.kernels(2, "features.0").shape == (10, 1, 3, 3)


def test_kernels_are_the_checkpointed_weights_and_change(run):
    for epoch in run.epochs:
        model = run.model(epoch)
        assert not model.training
        np.testing.assert_array_equal(run.kernels(epoch, "features.2"), model.features[2].weight.detach().numpy())
    assert not np.array_equal(run.kernels(0, "features.0"), run.kernels(2, "features.0"))


def test_initial_kernels_are_the_seeded_zoo_init(run):
    from kernelscope.models import build_model

    torch.manual_seed(0)
    init = build_model("tinyvgg", in_channels=1, num_classes=10, input_size=8)
    np.testing.assert_array_equal(run.kernels(0, "features.0"), init.features[0].weight.detach().numpy())


def test_feature_maps_are_the_probe_images_through_the_model(run):
    images, raw, labels = run.probe()
    assert images.shape == raw.shape == (4, 1, 8, 8) and labels.tolist() == [0, 1, 2, 3]
    dataset = run.dataset()
    np.testing.assert_allclose(images, dataset.normalise(raw), rtol=1e-6)
    for epoch in (0, 2):
        maps = run.feature_maps(epoch)
        model = run.model(epoch)
        with torch.no_grad():
            first = model.features[0](torch.from_numpy(images)).numpy()  # (P, 10, 8, 8)
        np.testing.assert_allclose(maps["features.0"], first, rtol=1e-5, atol=1e-6)
        assert maps["features.7"].shape == (4, 10, 4, 4)


def test_same_seed_same_kernels_bit_for_bit(run, tmp_path):
    again = train(tiny(), tmp_path / "again")
    for epoch in run.epochs:
        for name, value in run.kernels(epoch).items():
            assert again.kernels(epoch, name).tobytes() == value.tobytes()
    other = train(tiny(seed=1), tmp_path / "other")
    assert not np.array_equal(other.kernels(2, "features.0"), run.kernels(2, "features.0"))


class Kill:
    """Simulates a killed process: raises after the checkpoint of epoch ``after``."""

    def __init__(self, after: int):
        self.after = after

    def on_epoch_end(self, state):
        if state.epoch == self.after:
            raise KeyboardInterrupt("killed")


def test_resume_after_a_kill_ends_with_the_same_kernels(tmp_path):
    config = tiny(epochs=3, shift=1, hflip=True, record_every_steps=4)
    whole = train(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "killed", callbacks=[Kill(after=1)])
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["epochs_completed"] == 1
    resumed = train(config, tmp_path / "killed", resume=True)
    assert resumed.manifest["status"] == "complete" and [m["epoch"] for m in resumed.metrics] == [1, 2, 3]
    for epoch in whole.epochs:
        for name, value in whole.kernels(epoch).items():
            assert resumed.kernels(epoch, name).tobytes() == value.tobytes()
    assert resumed.steps == whole.steps == [4, 8, 12]
    for a, b in zip(resumed.metrics, whole.metrics, strict=True):
        assert a["test_acc"] == b["test_acc"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)


def test_resume_can_extend_epochs_with_a_constant_lr(tmp_path):
    short = train(tiny(epochs=1, lr_schedule="constant"), tmp_path / "r")
    assert short.epochs == [0, 1]
    longer = train(tiny(epochs=2, lr_schedule="constant"), tmp_path / "r", resume=True)
    reference = train(tiny(epochs=2, lr_schedule="constant"), tmp_path / "ref")
    assert longer.kernels(2, "features.0").tobytes() == reference.kernels(2, "features.0").tobytes()
    train(tiny(epochs=1, lr_schedule="cosine"), tmp_path / "cos")
    with pytest.raises(KernelscopeError, match=r"different config \(epochs: run has 1, now 2\)"):
        train(tiny(epochs=2, lr_schedule="cosine"), tmp_path / "cos", resume=True)


def test_cosine_schedule_decays_to_zero(tmp_path):
    seen = []

    class LR:
        def on_step_end(self, state):
            seen.append(state.optimizer.param_groups[0]["lr"])

    train(tiny(epochs=2, lr_schedule="cosine", lr=1e-3), tmp_path / "r", callbacks=[LR()])
    assert len(seen) == 10 and seen[0] == pytest.approx(1e-3) and seen[-1] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(0.9 * np.pi)))
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))


def test_existing_run_is_refused_and_left_intact(run, tmp_path):
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    with pytest.raises(KernelscopeError, match=r"already holds a run \(complete, 2 epochs\); use --resume to "
                                               r"continue it or --force to overwrite it"):
        train(tiny(), run.path)
    with pytest.raises(KernelscopeError, match=r"cannot resume .* with a different config \(lr: run has 0.001, "
                                               r"now 0.01\)"):
        train(tiny(lr=0.01), run.path, resume=True)
    after = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    assert after == before


def test_force_replaces_only_run_files(tmp_path):
    out = tmp_path / "r"
    train(tiny(epochs=1), out)
    (out / "notes.txt").write_text("mine")
    train(tiny(epochs=1, seed=5), out, force=True)
    assert (out / "notes.txt").read_text() == "mine" and load_run(out).manifest["seed"] == 5


def test_other_refusals(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(KernelscopeError, match="is not empty and holds no run; choose another --out or use --force"):
        train(tiny(), tmp_path / "busy")
    with pytest.raises(KernelscopeError, match="nothing to resume: .* holds no run"):
        train(tiny(), tmp_path / "fresh", resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(KernelscopeError, match="is a file, not a directory"):
        train(tiny(), tmp_path / "file")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
    ({"optimizer": "adamm"}, r"unknown optimizer 'adamm'; did you mean 'adam'"),
    ({"lr": -1.0}, r"lr must be a number > 0, got -1.0"),
    ({"data": "mnsit"}, r"unknown dataset 'mnsit'; did you mean 'mnist'"),
    ({"model": "vgg"}, r"unknown model 'vgg'"),
    ({"device": "tpu"}, r"device must be auto, cpu or cuda, got 'tpu'"),
])
def test_bad_config(kwargs, message, tmp_path):
    with pytest.raises(KernelscopeError, match=message):
        train(tiny(**kwargs), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_presets():
    s = preset("structure")
    assert (s.model, s.optimizer, s.lr, s.weight_decay, s.init_scale, s.shift, s.epochs) == \
        ("large-kernel", "adamw", 2e-3, 0.05, 0.05, 2, 15)
    assert preset("plain") == TrainConfig()
    with pytest.raises(KernelscopeError, match="unknown preset 'struct'; did you mean 'structure'"):
        preset("struct")


def test_init_scale_scales_every_kernel(tmp_path):
    a = train(tiny(epochs=1, init_scale=0.05), tmp_path / "a")
    b = train(tiny(epochs=1), tmp_path / "b")
    for name, value in b.kernels(0).items():
        np.testing.assert_allclose(a.kernels(0, name), 0.05 * value, rtol=1e-6)


def test_augment_shifts_are_translations_with_zero_fill():
    config = tiny(shift=2)
    x = torch.arange(2 * 36, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    out = _augment(x, config, torch.Generator().manual_seed(0))
    for i in range(2):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
                if torch.equal(out[i], padded[:, 2 + dy:8 + dy, 2 + dx:8 + dx]):
                    matches.append((dy, dx))
        assert len(matches) == 1


def test_choose_probe_cycles_classes():
    assert choose_probe(np.array([2, 2, 1, 0, 1]), 5).tolist() == [3, 2, 0, 4, 1]


def test_probe_hooks_removed_even_when_forward_fails():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(5, 2))
    with pytest.raises(RuntimeError):
        probe_feature_maps(net, ["0"], torch.zeros(1, 1, 6, 6))
    assert not net[0]._forward_hooks and net.training


def test_learning_beats_shuffled_labels_control(tmp_path):
    """Digits are learnable: real labels beat the same run on a label-shuffled copy (the control)."""
    config = tiny(epochs=4, train_limit=None, lr=3e-3, batch_size=64, record_feature_maps=False, shift=0,
                  lr_schedule="constant")
    real = train(config, tmp_path / "real").metrics[-1]["test_acc"]
    from kernelscope.data import load_dataset

    shuffled = load_dataset("digits")
    rng = np.random.default_rng(0)
    x, y = torch.from_numpy(shuffled.normalise(shuffled.x_train)), rng.permutation(shuffled.y_train)
    torch.manual_seed(0)
    from kernelscope.models import build_model

    net = build_model("tinyvgg", input_size=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(4):
        for s in range(0, len(y), 64):
            loss = torch.nn.functional.cross_entropy(net(x[s:s + 64]), torch.from_numpy(y[s:s + 64]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        control = float((net(torch.from_numpy(shuffled.normalise(shuffled.x_test))).argmax(1).numpy()
                         == shuffled.y_test).mean())
    assert real > 0.8 and control < 0.3


def test_channels_last_is_only_a_layout(run, tmp_path):
    contiguous = train(tiny(channels_last=False), tmp_path / "nchw")
    for epoch in run.epochs:
        for name, value in run.kernels(epoch).items():
            np.testing.assert_allclose(contiguous.kernels(epoch, name), value, rtol=1e-4, atol=1e-6)
    for name, value in run.feature_maps(2).items():
        np.testing.assert_allclose(contiguous.feature_maps(2)[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(KernelscopeError, match="device 'cuda' asked for, but torch sees no CUDA GPU"):
        train(tiny(device="cuda"), tmp_path / "r")
