"""The report's operation section: the 4x4 / 3x3 example, checked against sums computed here."""

from __future__ import annotations

import re

import numpy as np

from kernelscope.report.build import EXAMPLE_INPUT, EXAMPLE_KERNEL, operation_section


def _matrix(a) -> str:
    return "; ".join(" ".join(str(int(v)) for v in row) for row in np.asarray(a))


def test_operation_section_shows_every_window_and_both_conventions():
    section = operation_section()
    page = section.to_html()
    assert section.status == "ok"
    x, k = EXAMPLE_INPUT, EXAMPLE_KERNEL
    xcorr = np.array([[(x[r:r + 3, c:c + 3] * k).sum() for c in range(2)] for r in range(2)])
    conv = np.array([[(x[r:r + 3, c:c + 3] * k[::-1, ::-1]).sum() for c in range(2)] for r in range(2)])
    for r in range(2):
        for c in range(2):
            window = x[r:r + 3, c:c + 3]
            assert f"<td>({r}, {c})</td><td>{_matrix(window)}</td>" in page
            assert " + ".join(str(v) for v in (window * k).ravel()) in page
            assert f'<td class="num">{xcorr[r, c]}</td>' in page
    assert f"<td>{_matrix(xcorr)}</td>" in page and f"<td>{_matrix(conv)}</td>" in page
    assert _matrix(xcorr) == "154 157; 200 233"


def test_operation_section_backward_brings_the_flip_back():
    page = operation_section().to_html()
    x, k = EXAMPLE_INPUT, EXAMPLE_KERNEL
    kernel_grad = sum(x[r:r + 3, c:c + 3] for r in range(2) for c in range(2))  # g = ones
    input_grad = np.zeros((4, 4), dtype=int)
    for r in range(2):
        for c in range(2):
            input_grad[r:r + 3, c:c + 3] += k  # each output spreads the kernel back over its window
    assert f"<td>{_matrix(kernel_grad)}</td>" in page
    assert f"<td>{_matrix(input_grad)}</td>" in page
    assert "<td>4</td>" in page  # dL/dbias: four outputs


def test_operation_section_includes_the_convention_probe():
    page = operation_section().to_html()
    assert re.search(r"<td>torch</td><td>torch\.nn\.functional\.conv2d[^<]*</td><td>cross-correlation</td>", page)
    assert re.search(r"<td>scipy</td><td>scipy\.signal\.convolve2d[^<]*</td><td>true convolution</td>", page)
