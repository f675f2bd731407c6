"""A long pass in a log shows it is alive: a progress line every N batches, not only at the end."""

from __future__ import annotations

import io

import numpy as np

from kernelscope._progress import LineProgress


def test_a_line_every_n_units_and_one_at_the_end():
    out = io.StringIO()
    bar = LineProgress(desc="pass", total=10, unit="img", file=out, every=4)
    for _ in range(10):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" img")[0] for line in lines] == ["pass: 4/10", "pass: 8/10", "pass: 10/10"]
    quiet = io.StringIO()
    plain = LineProgress(desc="pass", total=10, file=quiet)  # without every: the end only, as before
    plain.update(10)
    plain.close()
    assert len(quiet.getvalue().splitlines()) == 1


def test_run_pass_prints_a_line_per_n_batches_in_a_log(monkeypatch, capsys):
    from kernelscope.analysis.passes import run_pass

    class Count:
        def __init__(self):
            self.n = 0

        def update(self, batch):
            self.n += len(batch.indices)

        def state(self):
            return {"n": self.n}

        def load(self, state):
            self.n = state["n"]

        def merge(self, states):
            self.n = sum(s["n"] for s in states)

    monkeypatch.setenv("KERNELSCOPE_PROGRESS", "lines")
    count = Count()
    run_pass({"count": count}, np.zeros((50, 1, 2, 2), dtype=np.float32), batch_size=5, progress_every=4,
             desc="count")
    lines = capsys.readouterr().err.splitlines()
    assert count.n == 50
    assert [line.split(" img")[0] for line in lines] == ["count: 20/50", "count: 40/50", "count: 50/50"]
