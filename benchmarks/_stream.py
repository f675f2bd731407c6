"""What several benchmarks stream: a data set repeated, never materialised."""

from __future__ import annotations

import numpy as np

BATCH = 64


class Repeated:
    """A re-iterable stream of batches of ``batch`` images: ``base`` repeated ``times`` times, never materialised."""

    def __init__(self, base: np.ndarray, times: int, batch: int = BATCH):
        self.base, self.times, self.batch = base, times, batch

    def __iter__(self):
        for _ in range(self.times):
            for start in range(0, len(self.base), self.batch):
                yield self.base[start : start + self.batch]

    def __len__(self):
        return len(self.base) * self.times
