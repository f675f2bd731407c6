"""The training configuration: one flat dataclass, the reason for each default beside it.

Named presets bundle the settings of a recipe:

- ``"plain"``: the defaults: default PyTorch init, Adam 1e-3 without weight decay, cosine
  decay, shifts of +-2 px, 10 epochs, large-kernel net. ~97.5% on the bundled MNIST.
- ``"structure"``: FINDINGS.md's recipe that makes first-layer structure appear on MNIST:
  init scaled by 0.05, AdamW (lr 2e-3, weight decay 0.05), random shifts of +-2 px,
  15 epochs, large-kernel net. The kernels become oriented edges and Gabor-like stripes.
  Against ``plain`` it changes the initial scale, the weight decay, the learning rate and
  the length: the atlas compares the two regimes.
- ``"faces"``: face vs. non-face on the bundled faces, TinyVGG, horizontal flips.

The atlas shows both regimes: ``plain`` and ``structure`` are kept side by side on purpose.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from kernelscope.errors import KernelscopeError, suggest

__all__ = ["TrainConfig", "PRESETS", "preset", "preset_names", "RESUME_MAY_CHANGE", "LIMITS"]

#: Fields a resumed run may change: they do not alter what the finished epochs computed
#: (``epochs`` only with a constant learning rate: a cosine schedule spans the whole run).
RESUME_MAY_CHANGE = frozenset({"epochs", "device", "progress", "channels_last", "tensorboard"})

#: Largest accepted values: beyond them a run would never end (epochs), allocate absurd padding
#: (shift) or overflow a generator's seed (torch takes seeds below 2**64).
LIMITS = {"epochs": 10_000, "shift": 64, "seed": 2**63 - 1, "split_seed": 2**63 - 1}


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in the run's manifest).

    Examples
    --------
    >>> c = TrainConfig(epochs=2)
    >>> c.data, c.model, c.epochs
    ('mnist', 'large-kernel', 2)
    >>> TrainConfig.from_dict(c.to_dict()) == c
    True
    """

    preset: str = "plain"            # which named recipe these values came from (for the record)
    data: str = "mnist"              # the bundled real digits: offline, 5,000 images, fast
    model: str = "large-kernel"      # 7x7 first layer: big enough to see edges/Gabors in the kernels
    kernel_size: int | None = None   # first-layer kernel size; None = the architecture's default
    width: int | None = None         # first-layer channels; None = the architecture's default
    depth: int | None = None         # conv blocks / stages; None = the architecture's default
    epochs: int = 10                 # plain recipe: 97.4-97.5% test accuracy on the bundled MNIST (seeds 0, 1)
    batch_size: int = 32             # small batches: 125 steps per epoch on the 4,000 training images
    optimizer: str = "adam"          # Adam converges in a few epochs without tuning
    lr: float = 1e-3                 # Adam's usual default
    lr_schedule: str = "cosine"      # decays to 0 over the run: steadier final accuracy ("constant": none)
    weight_decay: float = 0.0        # plain recipe: none (the structure recipe uses AdamW 0.05)
    momentum: float = 0.9            # used by "sgd" only
    init_scale: float = 1.0          # multiplies every conv kernel at init (0.05 in the structure recipe)
    shift: int = 2                   # random translations of +-2 px: without them a split seed gave 96.1%
    hflip: bool = False              # random horizontal flips (faces are left-right symmetric)
    seed: int = 0                    # seeds init, shuffling and augmentation: same seed, same kernels
    split_seed: int = 0              # seeds the train/test split, apart from `seed` so runs share a split
    test_fraction: float = 0.2       # 1,000 of the 5,000 MNIST images held out
    train_limit: int | None = None   # use only the first N training images (quick runs, tests)
    n_probe: int = 16                # probe images whose feature maps are recorded each epoch
    record_every_steps: int = 0      # also record kernels every N optimiser steps; 0 = epochs only
    record_feature_maps: bool = True # the probe images' maps at every conv layer, each epoch
    channels_last: bool = True       # NHWC memory layout: steps ~1.5x faster on this CPU (1 thread, measured)
    device: str = "auto"             # cuda when present, else cpu
    backend: str = "torch"           # "numpy" trains with kernelscope's own NumPy engine (npnet)
    progress: bool = True            # progress bar on stderr (tests switch it off via the environment)
    tensorboard: str | None = None   # also write TensorBoard event files here (train/tensorboard.py); None = only the run dir
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in the manifest

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict (a manifest's ``config``); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise KernelscopeError(suggest(unknown[0], names, what="config field"))
        return cls(**values)

    def validate(self) -> TrainConfig:
        """Check every field a user can set; raise :class:`KernelscopeError` naming the bad one."""
        def positive_int(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            low = 0 if allow_zero else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise KernelscopeError(f"{name} must be an integer >= {low}, got {value!r}")
            if name in LIMITS and value > LIMITS[name]:
                raise KernelscopeError(f"{name} must be at most {LIMITS[name]}, got {value!r}")

        for name in ("epochs", "batch_size", "n_probe"):
            positive_int(name)
        for name in ("shift", "record_every_steps", "seed", "split_seed"):
            positive_int(name, allow_zero=True)
        if self.train_limit is not None:
            positive_int("train_limit")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise KernelscopeError(suggest(self.optimizer, ["adam", "adamw", "sgd"], what="optimizer"))
        for name in ("lr", "init_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise KernelscopeError(f"{name} must be a number > 0, got {value!r}")
        for name in ("weight_decay", "momentum"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise KernelscopeError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("lr", "init_scale", "weight_decay", "momentum"):
            if not math.isfinite(getattr(self, name)):
                raise KernelscopeError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise KernelscopeError(f"device must be auto, cpu or cuda, got {self.device!r}")
        from kernelscope.data import _BUNDLED, _PREFIXES
        from kernelscope.models.zoo import ZOO

        if not isinstance(self.data, str) or (self.data.partition(":")[0] not in _PREFIXES
                                              and self.data not in _BUNDLED):
            from kernelscope.data import dataset_names

            raise KernelscopeError(suggest(str(self.data), dataset_names(), what="dataset"))
        if self.model not in ZOO:
            raise KernelscopeError(suggest(str(self.model), ZOO, what="model"))
        if self.lr_schedule not in ("constant", "cosine"):
            raise KernelscopeError(suggest(str(self.lr_schedule), ["constant", "cosine"], what="lr_schedule"))
        if self.backend not in ("torch", "numpy"):
            raise KernelscopeError(suggest(self.backend, ["torch", "numpy"], what="backend"))
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "plain": {},
    "structure": {
        "model": "large-kernel", "data": "mnist", "epochs": 15, "optimizer": "adamw", "lr": 2e-3,
        "weight_decay": 0.05, "init_scale": 0.05, "shift": 2, "batch_size": 64,
    },
    "faces": {
        "data": "faces", "model": "tinyvgg", "epochs": 20, "optimizer": "adam", "lr": 2e-3, "hflip": True,
        "batch_size": 32, "shift": 0,
    },
}


def preset_names() -> list[str]:
    """Names of the presets.

    Examples
    --------
    >>> preset_names()
    ['plain', 'structure', 'faces']
    """
    return list(PRESETS)


def preset(name: str = "plain", **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset, with ``overrides`` applied (None = keep).

    Examples
    --------
    >>> c = preset("structure", epochs=3)
    >>> c.preset, c.optimizer, c.init_scale, c.shift, c.epochs
    ('structure', 'adamw', 0.05, 2, 3)
    """
    if name not in PRESETS:
        raise KernelscopeError(suggest(str(name), PRESETS, what="preset"))
    values = {"preset": name, **PRESETS[name]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values).validate()
