"""Training benchmarks: the cost of recording, and time + accuracy of the shipped recipes.

    OPENBLAS_THREAD_TIMEOUT=4 .venv/bin/python benchmarks/bench_training.py [--quick] [--threads 1]

1. Recording overhead. The baseline is a plain PyTorch loop written here: the same model,
   data, batches, augmentation and optimiser as ``kernelscope.train.train``, without the
   recorder or checkpoints. Both run in this process, alternating, after a warm-up; the
   figure is the median time of an epoch (recording and checkpoint writing included for
   the recording loop) and the ratio recording / plain. Goal: <= 1.05.
2. Recipes: wall time and final test accuracy of the plain MNIST preset (goal >= 97%),
   the structure preset, and the faces preset (goal >= 95% face vs non-face).

Timings depend on what else runs on the machine: report them with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kernelscope.data import load_dataset  # noqa: E402
from kernelscope.models.layers import conv_layer_names  # noqa: E402
from kernelscope.models.zoo import build_model  # noqa: E402
from kernelscope.train import TrainConfig, preset, train  # noqa: E402
from kernelscope.train.loop import _augment, _build_optimizer  # noqa: E402


def plain_epoch_times(config: TrainConfig, epochs: int) -> list[float]:
    """The baseline: the same training steps, no recording, no checkpoints."""
    dataset = load_dataset(config.data, seed=config.split_seed, test_fraction=config.test_fraction)
    x = torch.from_numpy(dataset.x_train)
    y = torch.from_numpy(dataset.y_train)
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    torch.manual_seed(config.seed)
    c, h, w = dataset.image_shape
    model = build_model(config.model, in_channels=c, num_classes=dataset.num_classes, input_size=(h, w))
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name in conv_layer_names(model):
                module.weight.mul_(config.init_scale)
    optimizer = _build_optimizer(config, model.parameters())
    generator = torch.Generator().manual_seed(config.seed)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for s in range(0, len(y), config.batch_size):
            index = order[s:s + config.batch_size]
            xb = _augment(x[index], config, generator)
            loss = F.cross_entropy(model(((xb - mean) / std).contiguous(memory_format=layout)), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():  # the recording loop also evaluates on the test split each epoch
            model(((torch.from_numpy(dataset.x_test) - mean) / std).contiguous(memory_format=layout))
        times.append(time.perf_counter() - start)
    return times


class EpochClock:
    """A callback placed after the recorder and the checkpointer: times whole epochs, recording included."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_begin(self, state) -> None:
        self.marks.append(time.perf_counter())

    def on_epoch_end(self, state) -> None:
        self.marks.append(time.perf_counter())

    def epoch_times(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


def recording_epoch_times(config: TrainConfig, epochs: int, out: Path) -> list[float]:
    clock = EpochClock()
    train(TrainConfig.from_dict({**config.to_dict(), "epochs": epochs, "progress": False}), out,
          callbacks=[clock], force=True)
    return clock.epoch_times()


def bench_recording(config: TrainConfig, epochs: int, rounds: int, workdir: Path) -> None:
    print(f"\n== recording overhead: {config.model} on {config.data}, batch {config.batch_size}, "
          f"{epochs} epochs x {rounds} rounds (first epoch of each round dropped as warm-up)")
    plain, recording = [], []
    for r in range(rounds):
        plain += plain_epoch_times(config, epochs)[1:]
        recording += recording_epoch_times(config, epochs, workdir / f"rec{r}")[1:]
    n_train = len(load_dataset(config.data).y_train)
    p, q = statistics.median(plain), statistics.median(recording)
    print(f"plain PyTorch loop   median epoch {p:.3f} s  ({n_train / p:,.0f} images/s)")
    print(f"recording loop       median epoch {q:.3f} s  ({n_train / q:,.0f} images/s)")
    print(f"ratio recording / plain = {q / p:.3f}  (goal <= 1.05)")


def bench_recipe(name: str, workdir: Path, **overrides) -> None:
    config = preset(name, progress=False, **overrides)
    start = time.perf_counter()
    run = train(config, workdir / name, force=True)
    seconds = time.perf_counter() - start
    last = run.metrics[-1]
    best = max(m["test_acc"] for m in run.metrics)
    print(f"{name:<10} {config.model:<13} {config.data:<7} {config.epochs:>3} epochs  {seconds:6.1f} s  "
          f"test acc {last['test_acc']:.4f} (best epoch {best:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, fewer epochs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own; 1 resists other processes' load)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bench_recording(preset("plain"), epochs=2 if args.quick else 4, rounds=1 if args.quick else 3,
                        workdir=workdir)
        print("\n== recipes (wall time including data loading and recording)")
        bench_recipe("plain", workdir)
        bench_recipe("structure", workdir, **({"epochs": 3} if args.quick else {}))
        bench_recipe("faces", workdir, **({"epochs": 5} if args.quick else {}))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
