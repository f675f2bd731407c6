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
    args = parser.parse_args()
    os.environ.setdefault("KERNELSCOPE_THREADS", str(args.threads))  # the engine's own thread pool

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
    print(f"{'phase':<10}{'numpy ms':>10}{'torch ms':>10}{'ratio':>8}")
    total_n = total_t = 0.0
    for phase, a, b in (("forward", "np_fwd", "t_fwd"), ("backward", "np_bwd", "t_bwd"),
                        ("optimiser", "np_step", "t_step")):
        n_ms, t_ms = median_ms(times[a]), median_ms(times[b])
        total_n += n_ms
        total_t += t_ms
        print(f"{phase:<10}{n_ms:>10.2f}{t_ms:>10.2f}{n_ms / t_ms:>7.2f}x")
    print(f"{'step':<10}{total_n:>10.2f}{total_t:>10.2f}{total_n / total_t:>7.2f}x   (goal: within 3x)")


if __name__ == "__main__":
    main()
