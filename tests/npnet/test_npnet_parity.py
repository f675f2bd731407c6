"""The NumPy LeNet follows PyTorch's training of the same network step for step.

Same initial weights (copied from the torch model), same data order, same
hyper-parameters: the per-step losses and the final weights must agree to float
tolerance. float64 on both sides gives tight agreement; float32 a looser one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.npnet.step import make_optimizer, train_step
from kernelscope.npnet.torch_bridge import from_torch

STEPS = 50
BATCH = 8


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny batches: one thread is faster, and immune to the other processes on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mnist_batches():
    from kernelscope.data import load_dataset

    data = load_dataset("mnist", seed=0)
    x = data.normalise(data.x_train[:STEPS * BATCH])  # (800, 1, 28, 28)
    y = data.y_train[:STEPS * BATCH]
    order = np.random.default_rng(1).permutation(len(y))  # the data order both sides follow
    return x[order], y[order]


def _lenet(pool: str) -> nn.Module:
    from kernelscope.models.zoo import build_model

    torch.manual_seed(0)
    if pool == "avg":
        return build_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def _torch_optimizer(name, params, **hyper):
    if name == "sgd":
        return torch.optim.SGD(params, lr=hyper["lr"], momentum=hyper["momentum"], weight_decay=hyper["weight_decay"])
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=hyper["lr"], weight_decay=hyper["weight_decay"])


def run_both(batches, *, pool="avg", optimizer="sgd", dtype=torch.float64, steps=STEPS, **hyper):
    x, y = batches
    model = _lenet(pool).to(dtype)
    npdtype = np.float64 if dtype == torch.float64 else np.float32
    net = from_torch(model, dtype=npdtype)
    opt_np = make_optimizer(optimizer, net.parameters(), **hyper)
    opt_t = _torch_optimizer(optimizer, model.parameters(), **hyper)
    losses_np, losses_t = [], []
    for step in range(steps):
        xb, yb = x[step * BATCH:(step + 1) * BATCH].astype(npdtype), y[step * BATCH:(step + 1) * BATCH]
        loss, _ = train_step(net, opt_np, xb, yb, step=step + 1)
        losses_np.append(loss)
        loss_t = F.cross_entropy(model(torch.from_numpy(xb)), torch.from_numpy(yb))
        opt_t.zero_grad()
        loss_t.backward()
        opt_t.step()
        losses_t.append(loss_t.item())
    torch_params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return np.array(losses_np), np.array(losses_t), net.parameters(), torch_params


HYPER = {"sgd": dict(lr=0.05, momentum=0.9, weight_decay=5e-4),
         "adam": dict(lr=2e-3, weight_decay=1e-3),
         "adamw": dict(lr=2e-3, weight_decay=0.05)}


@pytest.mark.parametrize("optimizer, pool, steps", [("sgd", "avg", STEPS), ("sgd", "max", STEPS), ("adamw", "avg", STEPS)])
def test_float64_training_follows_torch_step_for_step(mnist_batches, optimizer, pool, steps):
    losses_np, losses_t, params_np, params_t = run_both(mnist_batches, pool=pool, optimizer=optimizer,
                                                        steps=steps, **HYPER[optimizer])
    assert np.ptp(losses_t) > 0.1  # a trajectory that moves, not a trivially equal constant
    if steps >= 50:
        assert losses_t[-10:].mean() < losses_t[:10].mean() - 0.2  # and the long run really learns
    np.testing.assert_allclose(losses_np, losses_t, rtol=1e-10, atol=1e-12)
    assert sorted(params_np) == sorted(params_t)
    for name in params_t:
        np.testing.assert_allclose(params_np[name], params_t[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_float32_training_follows_torch_within_float32_tolerance(mnist_batches):
    losses_np, losses_t, params_np, params_t = run_both(mnist_batches, dtype=torch.float32, **HYPER["sgd"])
    np.testing.assert_allclose(losses_np, losses_t, rtol=1e-5, atol=1e-5)
    for name in params_t:
        np.testing.assert_allclose(params_np[name], params_t[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_parity_detects_a_wrong_update_rule(mnist_batches, monkeypatch):
    """The comparison has teeth: a momentum off by 0.01 on the NumPy side breaks the agreement."""
    from kernelscope.npnet import optim

    original = optim.SGD.__init__

    def wrong_momentum(self, params, *, lr, momentum=0.0, weight_decay=0.0):
        original(self, params, lr=lr, momentum=momentum + 0.01, weight_decay=weight_decay)

    monkeypatch.setattr(optim.SGD, "__init__", wrong_momentum)
    losses_np, losses_t, params_np, params_t = run_both(mnist_batches, steps=4, **HYPER["sgd"])
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(params_np["features.0.weight"], params_t["features.0.weight"],
                                   rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["tinyvgg", "large-kernel"])
def test_other_zoo_models_follow_torch_with_adam(rng, name):
    """The other architectures the NumPy back end runs (padded convs, max pooling), 10 Adam steps, float64."""
    from kernelscope.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=10, input_size=12).double()
    net = from_torch(model, dtype=np.float64)
    opt_np = make_optimizer("adam", net.parameters(), lr=1e-2)
    opt_t = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(10):
        xb, yb = rng.normal(size=(8, 1, 12, 12)), rng.integers(0, 10, size=8)
        loss, _ = train_step(net, opt_np, xb, yb, step=step + 1)
        loss_t = F.cross_entropy(model(torch.from_numpy(xb)), torch.from_numpy(yb))
        opt_t.zero_grad()
        loss_t.backward()
        opt_t.step()
        assert loss == pytest.approx(loss_t.item(), rel=1e-10, abs=1e-12)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(net.parameters()[key], value.numpy(), rtol=1e-9, atol=1e-11, err_msg=key)
