"""Source: one way to open what the user names; its device, init control and image sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.analysis.toppatches import top_patches
from kernelscope.errors import KernelscopeError
from kernelscope.sources import open_source

HAS_CUDA = torch.cuda.is_available()


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU())


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(cli_runner, tmp_path):
    with pytest.raises(KernelscopeError, match=r"^device 'cuda' asked for, but torch sees no CUDA GPU"):
        open_source(_net(), device="cuda")
    result = cli_runner("maps", "onet", "--device", "cuda", "--out", tmp_path)
    assert result.exit_code == 2 and result.output.startswith("Error: device 'cuda' asked for")
    assert not any(tmp_path.iterdir())


def test_auto_is_cpu_here_unless_a_gpu_exists():
    src = open_source(_net(), device="auto")
    assert src.device == ("cuda:0" if HAS_CUDA else "cpu")
    assert next(src.model.parameters()).device.type == src.device.split(":")[0]
    assert next(src.init_model(0).parameters()).device.type == src.device.split(":")[0]


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none in CI)")
def test_the_same_top_patches_on_cpu_and_cuda():
    images = np.random.default_rng(0).normal(size=(40, 1, 12, 12)).astype(np.float32)
    cpu = top_patches(open_source(_net(), device="cpu").model, "2", images, k=3)
    gpu = top_patches(open_source(_net(), device="cuda").model, "2", images, k=3)
    np.testing.assert_array_equal(cpu.image_index, gpu.image_index)
    np.testing.assert_allclose(cpu.values, gpu.values, rtol=1e-4, atol=1e-5)


def test_init_control_is_the_same_network_reinitialised_and_never_the_trained_one():
    net = _net()
    src = open_source(net)
    a, b = src.init_model(3), src.init_model(3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[0].weight, net[0].weight)
    assert [type(m) for m in a.modules()] == [type(m) for m in net.modules()]
    kernels = src.init_kernels("2", 20, seed=1)
    assert kernels.shape == (20, 4, 3, 3) and not np.array_equal(kernels[:6], net[2].weight.detach().numpy())


def test_images_a_model_cannot_run_on_are_one_line(tmp_path):
    """A state dict's architecture fixes its input size; other images fail before any analysis starts."""
    from kernelscope.models.zoo import build_model

    torch.save(build_model("tinyvgg", in_channels=1, num_classes=2, input_size=32).state_dict(), tmp_path / "tv.pt")
    src = open_source(tmp_path / "tv.pt", arch="tinyvgg")
    with pytest.raises(KernelscopeError, match=r"^model tv.pt cannot run on images 'faces' of shape \(1, 25, 25\) "
                                               r"\(C, H, W\): .*give images of the size it was built for$"):
        src.images("faces")


def test_the_seeded_face_net_is_the_init_control():
    """build_face_net(seed) and reinitialised(any face net, seed) give the same weights: one init control."""
    from kernelscope.models.init import reinitialised
    from kernelscope.models.zoo import build_face_net

    built, reset = build_face_net(0), reinitialised(build_face_net(5), seed=0)
    assert all(torch.equal(p, q) for p, q in zip(built.parameters(), reset.parameters(), strict=True))
    assert not torch.equal(build_face_net(5)[0].weight, built[0].weight)
