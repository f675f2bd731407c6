"""Per-step time of the NumPy LeNet (npnet) against PyTorch eager on the same network and batch.

Run: ``OPENBLAS_THREAD_TIMEOUT=4 .venv/bin/python benchmarks/bench_npnet.py [--batch 64] [--repeats 30]
[--threads 2]``

Same network (the zoo's ``lenet5``: 5x5 convolutions, ReLU, average pooling, three linear
layers), same weights, same real MNIST batch. Forward (logits + loss) and backward
(all parameter gradients) are timed separately, back to back after a warm-up, and the
medians are compared in the same process. The NumPy side's backward is the engine's
(:mod:`kernelscope.ops.backward`); torch's is autograd. The optimiser step is timed too.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # FINDINGS.md: NumPy's BLAS threads must not spin

import numpy as np  # noqa: E402


def median_ms(samples: list[float]) -> float:
    return float(np.median(samples) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for both sides: torch.set_num_threads and NumPy's BLAS (threadpoolctl)")
    parser.add_argument("--parity", action="store_true",
                        help="instead: how closely NumPy training follows torch (50 steps, batch 8)")
    args = parser.parse_args()
    os.environ.setdefault("KERNELSCOPE_THREADS", str(args.threads))  # the engine's own thread pool
    if args.parity:
        parity_table()
        return

    import torch
    import torch.nn.functional as F
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")

    from kernelscope.data import load_dataset
    from kernelscope.models.zoo import build_model
    from kernelscope.npnet.loss import softmax_cross_entropy
    from kernelscope.npnet.optim import SGD
    from kernelscope.npnet.torch_bridge import from_torch

    data = load_dataset("mnist", seed=0)
    x = data.normalise(data.x_train[:args.batch])  # (B, 1, 28, 28) float32
    y = data.y_train[:args.batch]
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    net = from_torch(model, dtype=np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt_t = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)  # lr 0: weights stay comparable
    opt_n = SGD(net.parameters(), lr=0.0, momentum=0.9)

    times: dict[str, list[float]] = {k: [] for k in ("np_fwd", "np_bwd", "np_step", "t_fwd", "t_bwd", "t_step")}
    for i in range(args.warmup + args.repeats):
        keep = i >= args.warmup
        # NumPy
        t0 = time.perf_counter()
        logits = net.forward(x)
        loss, grad = softmax_cross_entropy(logits, y)
        t1 = time.perf_counter()
        net.backward(grad)
        t2 = time.perf_counter()
        opt_n.step(net.gradients())
        t3 = time.perf_counter()
        # PyTorch eager
        s0 = time.perf_counter()
        loss_t = F.cross_entropy(model(xt), yt)
        s1 = time.perf_counter()
        opt_t.zero_grad(set_to_none=True)
        loss_t.backward()
        s2 = time.perf_counter()
        opt_t.step()
        s3 = time.perf_counter()
        if keep:
            times["np_fwd"].append(t1 - t0)
            times["np_bwd"].append(t2 - t1)
            times["np_step"].append(t3 - t2)
            times["t_fwd"].append(s1 - s0)
            times["t_bwd"].append(s2 - s1)
            times["t_step"].append(s3 - s2)
    assert abs(loss - loss_t.item()) < 1e-4, (loss, loss_t.item())  # same network, same numbers

    print(f"LeNet-5 (zoo lenet5) on real MNIST, batch {args.batch}, float32, "
          f"torch {torch.__version__}, {args.threads} thread(s) each side; medians of {args.repeats} "
          f"after {args.warmup} warm-up steps")
    print("medians (and minima, less sensitive to other processes on a shared CPU)")
    print(f"{'phase':<10}{'numpy ms':>10}{'torch ms':>10}{'ratio':>8}  {'min numpy':>10}{'min torch':>10}{'ratio':>8}")
    total_n = total_t = min_n = min_t = 0.0
    for phase, a, b in (("forward", "np_fwd", "t_fwd"), ("backward", "np_bwd", "t_bwd"),
                        ("optimiser", "np_step", "t_step")):
        n_ms, t_ms = median_ms(times[a]), median_ms(times[b])
        n_min, t_min = min(times[a]) * 1e3, min(times[b]) * 1e3
        total_n, total_t, min_n, min_t = total_n + n_ms, total_t + t_ms, min_n + n_min, min_t + t_min
        print(f"{phase:<10}{n_ms:>10.2f}{t_ms:>10.2f}{n_ms / t_ms:>7.2f}x  {n_min:>10.2f}{t_min:>10.2f}"
              f"{n_min / t_min:>7.2f}x")
    print(f"{'step':<10}{total_n:>10.2f}{total_t:>10.2f}{total_n / total_t:>7.2f}x  {min_n:>10.2f}{min_t:>10.2f}"
          f"{min_n / min_t:>7.2f}x   (goal: within 3x)")
    kernel_gradient_methods(net, x)


def kernel_gradient_methods(net, x) -> None:
    """The kernel gradient's correlation by each engine method, for the network's conv layers.

    There the output gradient is the "kernel" (H' x W' taps) and the output is only
    kh x kw: the case ``correlate2d_backward`` sends to the FFT under ``method="auto"``.
    """
    from kernelscope.npnet.layers import Conv2d
    from kernelscope.ops import correlate2d, pad2d

    rng = np.random.default_rng(0)
    print("kernel-gradient correlation xcorr(padded input, g) by engine method, ms (median of 5):")
    h = x
    for name, layer in net.layers:
        out = layer.forward(h)
        if isinstance(layer, Conv2d):
            xp = pad2d(h, layer.padding).swapaxes(0, 1).copy()  # (C, N, Hp, Wp): batch as channels
            g = rng.normal(size=out.shape).astype(np.float32).swapaxes(0, 1).copy()  # (O, N, H', W')
            cells = []
            for method in ("im2col", "fft"):
                samples = []
                for _ in range(6):
                    t0 = time.perf_counter()
                    correlate2d(xp, g, method=method)
                    samples.append(time.perf_counter() - t0)
                cells.append(f"{method} {median_ms(samples[1:]):.2f}")
            print(f"  {name:<12} input {tuple(h.shape)}, g {tuple(out.shape)}: " + ", ".join(cells))
        h = out


def parity_table(steps: int = 50, batch: int = 8) -> None:
    """Largest differences between NumPy and torch training of the zoo's LeNet-5 (as tests/npnet pins)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from kernelscope.data import load_dataset
    from kernelscope.models.zoo import build_model
    from kernelscope.npnet.step import make_optimizer, train_step
    from kernelscope.npnet.torch_bridge import from_torch

    torch.set_num_threads(1)
    data = load_dataset("mnist", seed=0)
    x = data.normalise(data.x_train[:steps * batch])
    y = data.y_train[:steps * batch]
    order = np.random.default_rng(1).permutation(len(y))
    x, y = x[order], y[order]
    hyper = {"sgd": dict(lr=0.05, momentum=0.9, weight_decay=5e-4), "adamw": dict(lr=2e-3, weight_decay=0.05)}
    print(f"NumPy vs torch training of LeNet-5, {steps} steps of {batch} real MNIST images, same data order")
    print(f"{'optimiser':<10}{'pooling':<9}{'dtype':<9}{'loss first->last':>18}{'max |dloss|':>13}{'max |dweight|':>15}")
    for optimizer, pool, dtype in (("sgd", "avg", torch.float64), ("sgd", "max", torch.float64),
                                   ("adamw", "avg", torch.float64), ("sgd", "avg", torch.float32)):
        torch.manual_seed(0)
        if pool == "avg":
            model = build_model("lenet5", in_channels=1, num_classes=10, input_size=28)
        else:
            model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                                  nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                                  nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
        model = model.to(dtype)
        npdtype = np.float64 if dtype == torch.float64 else np.float32
        net = from_torch(model, dtype=npdtype)
        opt_n = make_optimizer(optimizer, net.parameters(), **hyper[optimizer])
        if optimizer == "sgd":
            opt_t = torch.optim.SGD(model.parameters(), **hyper["sgd"])
        else:
            opt_t = torch.optim.AdamW(model.parameters(), **hyper["adamw"])
        losses = []
        for step in range(steps):
            xb, yb = x[step * batch:(step + 1) * batch].astype(npdtype), y[step * batch:(step + 1) * batch]
            loss_n, _ = train_step(net, opt_n, xb, yb, step=step + 1)
            loss_t = F.cross_entropy(model(torch.from_numpy(xb)), torch.from_numpy(yb))
            opt_t.zero_grad()
            loss_t.backward()
            opt_t.step()
            losses.append((loss_n, loss_t.item()))
        dloss = max(abs(a - b) for a, b in losses)
        params = net.parameters()
        dweight = max(float(np.abs(params[k] - v.detach().numpy()).max()) for k, v in model.state_dict().items())
        trajectory = f"{losses[0][1]:.3f} -> {losses[-1][1]:.3f}"
        print(f"{optimizer:<10}{pool:<9}{str(dtype).split('.')[1]:<9}{trajectory:>18}{dloss:>13.1e}{dweight:>15.1e}")


if __name__ == "__main__":
    main()
