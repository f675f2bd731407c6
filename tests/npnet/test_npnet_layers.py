"""The NumPy layers, loss and optimiser against PyTorch, one at a time (float64, tight tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernelscope.errors import KernelscopeError
from kernelscope.npnet.layers import Flatten, Linear, MaxPool2d, ReLU, kaiming_uniform_init
from kernelscope.npnet.loss import softmax_cross_entropy
from kernelscope.npnet.optim import SGD


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def test_softmax_cross_entropy_matches_torch(rng):
    logits = rng.normal(scale=5.0, size=(7, 4))
    labels = rng.integers(0, 4, size=7)
    loss, grad = softmax_cross_entropy(logits, labels)
    t = _t(logits, grad=True)
    ref = F.cross_entropy(t, torch.tensor(labels))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    loss, grad = softmax_cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(1000.0)
    assert np.all(np.isfinite(grad))


def test_softmax_cross_entropy_rejects_bad_labels():
    with pytest.raises(KernelscopeError, match=r"labels must lie in \[0, 3\); got values 0\.\.3"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(KernelscopeError, match=r"needs logits \(N, K\) and labels \(N,\); got \(2, 3\) and \(3,\)"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2]))


@pytest.mark.parametrize("kernel_size, stride, shape", [
    (2, None, (2, 3, 8, 8)),
    (2, None, (2, 3, 9, 7)),    # odd sizes: the last row/column is dropped (floor mode)
    (3, 2, (2, 2, 9, 9)),       # overlapping windows
    (3, 1, (1, 2, 6, 5)),
])
def test_maxpool_matches_torch(rng, kernel_size, stride, shape):
    x = rng.normal(size=shape)
    x[0, 0, :2, :2] = 0.0  # a tie: the gradient must go to the first maximum, as in torch
    grad_out_shape = F.max_pool2d(_t(x), kernel_size, stride).shape
    g = rng.normal(size=tuple(grad_out_shape))
    pool = MaxPool2d(kernel_size, stride)
    out = pool.forward(x)
    t = _t(x, grad=True)
    ref = F.max_pool2d(t, kernel_size, stride)
    ref.backward(_t(g))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_allclose(pool.backward(g), t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_relu_and_flatten_match_torch(rng):
    x = rng.normal(size=(3, 2, 4, 4))
    x[0, 0, 0, 0] = 0.0  # PyTorch's gradient of relu at 0 is 0
    g = rng.normal(size=x.shape)
    t = _t(x, grad=True)
    torch.relu(t).backward(_t(g))
    relu = ReLU()
    np.testing.assert_array_equal(relu.forward(x), np.maximum(x, 0))
    np.testing.assert_array_equal(relu.backward(g), t.grad.numpy())
    flat = Flatten()
    assert flat.forward(x).shape == (3, 32)
    np.testing.assert_array_equal(flat.forward(x), torch.flatten(_t(x), 1).numpy())
    assert flat.backward(np.ones((3, 32))).shape == x.shape


def test_linear_matches_torch(rng):
    fc = Linear(5, 3, rng=rng, dtype=np.float64)
    x = rng.normal(size=(4, 5))
    g = rng.normal(size=(4, 3))
    t = _t(x, grad=True)
    w = _t(fc.params["weight"], grad=True)
    b = _t(fc.params["bias"], grad=True)
    F.linear(t, w, b).backward(_t(g))
    np.testing.assert_allclose(fc.forward(x), F.linear(_t(x), w, b).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(fc.backward(g), t.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(fc.grads["weight"], w.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(fc.grads["bias"], b.grad.numpy(), rtol=1e-12)
    with pytest.raises(KernelscopeError, match=r"Linear\(5, 3\) got input of shape \(4, 6\); expected \(N, 5\)"):
        fc.forward(np.zeros((4, 6)))


def test_kaiming_uniform_bound_matches_torch_default():
    layer = torch.nn.Conv2d(3, 8, 5)
    bound = 1 / np.sqrt(3 * 25)
    assert layer.weight.abs().max().item() <= bound
    w = kaiming_uniform_init((8, 3, 5, 5), 75, np.random.default_rng(0))
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.9 * bound  # it uses the whole range, not a smaller one


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 5e-4), (0.5, 0.1)])
def test_sgd_matches_torch_over_steps(rng, momentum, weight_decay):
    p0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(6)]
    params = {"w": p0.copy()}
    opt = SGD(params, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    tp = _t(p0, grad=True)
    topt = torch.optim.SGD([tp], lr=0.1, momentum=momentum, weight_decay=weight_decay)
    for g in grads:
        opt.step({"w": g})
        tp.grad = _t(g)
        topt.step()
        np.testing.assert_allclose(params["w"], tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_rejects_bad_hyper_parameters_and_shapes():
    with pytest.raises(KernelscopeError, match=r"SGD momentum=-0\.1 must be a finite number >= 0"):
        SGD({}, lr=0.1, momentum=-0.1)
    opt = SGD({"w": np.zeros(3)}, lr=0.1)
    with pytest.raises(KernelscopeError, match=r"gradient of 'w' has shape \(4,\), the parameter \(3,\)"):
        opt.step({"w": np.zeros(4)})


@pytest.mark.parametrize("decoupled, weight_decay", [(False, 0.0), (False, 0.01), (True, 0.05)])
def test_adam_and_adamw_match_torch_over_steps(rng, decoupled, weight_decay):
    from kernelscope.npnet.optim import Adam

    p0 = rng.normal(size=(3, 4))
    params = {"w": p0.copy()}
    opt = Adam(params, lr=0.01, weight_decay=weight_decay, decoupled=decoupled)
    tp = _t(p0, grad=True)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    topt = cls([tp], lr=0.01, weight_decay=weight_decay)
    for _ in range(6):
        g = rng.normal(size=(3, 4))
        opt.step({"w": g})
        tp.grad = _t(g)
        topt.step()
        np.testing.assert_allclose(params["w"], tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_avgpool_matches_torch(rng):
    from kernelscope.npnet.layers import AvgPool2d

    x = rng.normal(size=(2, 3, 9, 8))
    g = rng.normal(size=(2, 3, 3, 2))
    pool = AvgPool2d(3)
    t = _t(x, grad=True)
    ref = F.avg_pool2d(t, 3)
    ref.backward(_t(g))
    np.testing.assert_allclose(pool.forward(x), ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(pool.backward(g), t.grad.numpy(), rtol=1e-12)


def test_numpy_lenet_has_the_zoo_lenet5_layout():
    from kernelscope.models.zoo import build_model
    from kernelscope.npnet import lenet

    zoo = {k: tuple(v.shape) for k, v in build_model("lenet5", input_size=28).state_dict().items()}
    ours = {k: v.shape for k, v in lenet(input_size=28).state_dict().items()}
    assert ours == zoo


def test_importing_npnet_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, kernelscope.npnet, kernelscope.npnet.step, kernelscope.ops.backward, "
            "kernelscope.ops.explain_backward; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_from_torch_refuses_what_it_cannot_run():
    from torch import nn

    from kernelscope.npnet.torch_bridge import from_torch

    with pytest.raises(KernelscopeError, match=r"^layer '1' is a Tanh, which the NumPy network cannot run"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh()))
    with pytest.raises(KernelscopeError, match=r"^layer '0': npnet supports MaxPool2d with square windows, no padding"):
        from_torch(nn.Sequential(nn.MaxPool2d(2, padding=1)))
