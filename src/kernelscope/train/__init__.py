"""Training that records: one loop, a recorder callback, checkpoints and the run directory.

>>> from kernelscope.train import TrainConfig, preset
>>> preset("structure").init_scale
0.05
"""

from __future__ import annotations

from kernelscope.train.config import PRESETS, TrainConfig, preset, preset_names
from kernelscope.train.loop import TrainState, train
from kernelscope.train.recorder import Recorder
from kernelscope.train.rundir import Run, load_run

__all__ = ["TrainConfig", "train", "preset", "preset_names", "PRESETS", "Recorder", "TrainState", "Run",
           "load_run"]
