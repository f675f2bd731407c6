"""The stricter numbers for the demo and the report, each with its control."""

from __future__ import annotations

import numpy as np

from kernelscope.analysis.atlas import atlas
from kernelscope.analysis.atlas.templates import gabor_template
from kernelscope.analysis.dissect import dissect
from kernelscope.report.controls import (
    controls_section,
    replication_rows,
    strict_lines,
    strict_numbers,
)


def test_strict_numbers_lines_and_section(rng):
    import torch
    from torch import nn

    gabors = np.stack([gabor_template((7, 7), frequency=0.22, theta=t, phase=0.0, sigma_u=1.6, sigma_v=1.6)
                       for t in np.linspace(0, np.pi, 8, endpoint=False)])
    result = atlas(gabors, n_null=100, surrogates=39)
    net = nn.Sequential(nn.Conv2d(1, 2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net[0].bias.zero_()
    masks = np.zeros((60, 8, 8), dtype=bool)
    masks[:, 3, 3] = True  # always the same place: the IoU is high, the permutation null as high
    images = (rng.random((60, 1, 8, 8)) * 0.5 + 2.0 * masks[:, None]).astype(np.float32)
    numbers = strict_numbers(result, {"0": dissect(net, "0", images, {"eye": masks}, n_permutations=10)})
    assert numbers["structured_beyond_spectrum_n"] == 8
    assert numbers["structured_beyond_spectrum"] == result.surrogate["phase"].fraction
    assert numbers["structured_beyond_spectrum_control_smooth_n"] == 64
    assert (numbers["detectors_eye"], numbers["detectors_eye_gated"]) == (1, 0)
    lines = strict_lines(numbers)
    assert lines[0].startswith("structured beyond its spectrum: ")
    assert "eye detectors: 0 gated on the permutation null (IoU > 0.04 alone: 1)" in lines
    replication = {"preset": "structure", "seeds": [0, 1],
                   "summary": {"accuracy": {"mean": 0.97, "ci95": [0.96, 0.98], "min": 0.96, "max": 0.98, "n": 2}}}
    assert replication_rows(replication) == [["accuracy", 0.97, 0.96, 0.98, 0.96, 0.98, 2]]
    section = controls_section(result, replication=replication)
    text = "".join(str(b) for b in section.body)
    assert "smoothed random kernels" in text and "Preset structure over 2 seeds" in text
