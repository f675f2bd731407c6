"""Which "convolution" computes what: a probe of the installed libraries.

Deep-learning libraries call their layer a convolution but compute a
cross-correlation (no kernel flip); signal-processing libraries mostly compute a
true convolution. :func:`probe_conventions` sends one asymmetric kernel over one
small integer image through every implementation it finds installed, and compares
each output with both candidates computed by kernelscope's reference loop:
``correlate2d(x, k)`` and ``convolve2d(x, k) == correlate2d(x, flip(k))``. The
outputs are the evidence; absent libraries are listed as skipped.

Every library is imported inside its probe, so importing this module imports none.
It lives in ``analysis`` rather than beside the engine because its probes import
torch, OpenCV and JAX: the engine (``kernelscope.ops``) imports only NumPy and SciPy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kernelscope._display import Displayed, Summary
from kernelscope.ops.correlate import convolve2d, correlate2d

__all__ = ["probe_conventions", "format_conventions", "ConventionResult", "ConventionsReport",
           "PROBE_INPUT", "PROBE_KERNEL"]

#: a 5x6 integer image with no symmetry
PROBE_INPUT = np.array([[3, 0, 1, 4, 1, 5],
                        [9, 2, 6, 5, 3, 5],
                        [8, 9, 7, 9, 3, 2],
                        [3, 8, 4, 6, 2, 6],
                        [4, 3, 3, 8, 3, 2]], dtype=np.int64)
#: an asymmetric kernel: flipping it changes every output
PROBE_KERNEL = np.array([[1, 2, 0],
                         [0, 1, 0],
                         [0, 0, -3]], dtype=np.int64)

CROSS = "cross-correlation"
CONV = "true convolution"


@dataclass(repr=False)
class ConventionResult(Displayed):
    """What one library function computed."""

    library: str  # "torch", "scipy", ...
    call: str  # the call that was made
    verdict: str  # "cross-correlation", "true convolution", "neither", "skipped", "error"
    output: list | None = None  # what it returned (as compared)
    cross_correlation: list | None = None  # kernelscope's correlate2d on the same input
    convolution: list | None = None  # kernelscope's convolve2d on the same input
    note: str = ""


    def _display_summary(self) -> Summary:
        return Summary(f"{self.library}: {self.call}", [("computes", self.verdict)]
                       + ([("note", self.note)] if self.note else []))


@dataclass(repr=False)
class ConventionsReport(Displayed):
    """All probes, with the input and kernel they used.

    In a notebook: one row per library call with what it computes.
    """

    input: list
    kernel: list
    results: list[ConventionResult] = field(default_factory=list)

    def _display_summary(self) -> Summary:
        verdicts = [r.verdict for r in self.results]
        items = [(v, verdicts.count(v)) for v in dict.fromkeys(verdicts)]
        table = [{"library": r.library, "call": r.call, "computes": r.verdict, "note": r.note} for r in self.results]
        shape = np.asarray(self.input).shape
        k = np.asarray(self.kernel).shape
        return Summary(f"{len(self.results)} library calls probed with a {shape[0]}x{shape[1]} input and a "
                       f"{k[0]}x{k[1]} asymmetric kernel", items, table, brief=len(items))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able Python."""
        return asdict(self)


def _candidates_2d(x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """'same'-sized, zero-padded cross-correlation and convolution (odd kernels)."""
    return (correlate2d(x, k, padding="same", method="direct"),
            convolve2d(x, k, padding="same", method="direct"))


def _torch_functional(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    xt = torch.from_numpy(x.astype(np.float64))[None, None]
    kt = torch.from_numpy(k.astype(np.float64))[None, None]
    return F.conv2d(xt, kt, padding=k.shape[0] // 2)[0, 0].numpy()


def _torch_module(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    import torch

    layer = torch.nn.Conv2d(1, 1, k.shape, padding=k.shape[0] // 2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(k.astype(np.float64))[None, None])
        return layer(torch.from_numpy(x.astype(np.float64))[None, None])[0, 0].numpy()


def _scipy_signal(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def run(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        import scipy.signal

        return getattr(scipy.signal, name)(x, k, mode="same", boundary="fill")
    return run


def _scipy_ndimage(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def run(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        import scipy.ndimage

        return getattr(scipy.ndimage, name)(x, k, mode="constant", cval=0)
    return run


def _opencv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.filter2D(x.astype(np.float64), -1, k.astype(np.float64),
                        borderType=cv2.BORDER_CONSTANT)


def _jax(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    import jax.numpy as jnp
    from jax import lax

    out = lax.conv_general_dilated(jnp.asarray(x, jnp.float32)[None, None],
                                   jnp.asarray(k, jnp.float32)[None, None], (1, 1), "SAME")
    return np.asarray(out)[0, 0]


def _numpy_1d(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.convolve(x[0], k[0], mode="same")[None]


def _numpy_correlate_1d(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.correlate(x[0], k[0], mode="same")[None]


def _kernelscope(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def run(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        fn = correlate2d if name == "correlate2d" else convolve2d
        return fn(x, k, padding="same")
    return run


# (library, module to look for, call text, function, 1-D?)
_PROBES: list[tuple[str, str, str, Callable[[np.ndarray, np.ndarray], np.ndarray], bool]] = [
    ("torch", "torch", "torch.nn.functional.conv2d(x, k, padding=1)", _torch_functional, False),
    ("torch", "torch", "torch.nn.Conv2d(1, 1, 3, padding=1)", _torch_module, False),
    ("scipy", "scipy", "scipy.signal.convolve2d(x, k, mode='same')", _scipy_signal("convolve2d"), False),
    ("scipy", "scipy", "scipy.signal.correlate2d(x, k, mode='same')", _scipy_signal("correlate2d"), False),
    ("scipy", "scipy", "scipy.ndimage.convolve(x, k, mode='constant')", _scipy_ndimage("convolve"), False),
    ("scipy", "scipy", "scipy.ndimage.correlate(x, k, mode='constant')", _scipy_ndimage("correlate"), False),
    ("numpy", "numpy", "numpy.convolve(x[0], k[0], mode='same')  (1-D)", _numpy_1d, True),
    ("numpy", "numpy", "numpy.correlate(x[0], k[0], mode='same')  (1-D)", _numpy_correlate_1d, True),
    ("opencv", "cv2", "cv2.filter2D(x, -1, k, borderType=BORDER_CONSTANT)", _opencv, False),
    ("jax", "jax", "jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME')", _jax, False),
    ("kernelscope", "kernelscope", "kernelscope.ops.correlate2d(x, k, padding='same')",
     _kernelscope("correlate2d"), False),
    ("kernelscope", "kernelscope", "kernelscope.ops.convolve2d(x, k, padding='same')",
     _kernelscope("convolve2d"), False),
]


def probe_conventions(libraries: list[str] | None = None) -> ConventionsReport:
    """Run every installed "convolution" on an asymmetric kernel and say what it computes.

    Parameters
    ----------
    libraries : list of str, optional
        Only these libraries (``"torch"``, ``"scipy"``, ``"numpy"``, ``"opencv"``,
        ``"jax"``, ``"kernelscope"``); all by default.

    Returns
    -------
    ConventionsReport
        One :class:`ConventionResult` per probed function; the verdict is
        ``"cross-correlation"``, ``"true convolution"``, ``"neither"`` (matches no
        candidate), ``"skipped"`` (library not installed) or ``"error"``.

    Examples
    --------
    >>> report = probe_conventions(["numpy", "kernelscope"])
    >>> [(r.call.split("(")[0], r.verdict) for r in report.results]
    [('numpy.convolve', 'true convolution'), ('numpy.correlate', 'cross-correlation'), ('kernelscope.ops.correlate2d', 'cross-correlation'), ('kernelscope.ops.convolve2d', 'true convolution')]
    """
    x, k = PROBE_INPUT, PROBE_KERNEL
    report = ConventionsReport(input=x.tolist(), kernel=k.tolist())
    for library, module, call, run, one_d in _PROBES:
        if libraries is not None and library not in libraries:
            continue
        xi, ki = (x[:1], k[:1]) if one_d else (x, k)  # 1-D: the first row of each
        corr, conv = _candidates_2d(xi, ki)
        result = ConventionResult(library=library, call=call, verdict="skipped",
                                  cross_correlation=corr.tolist(), convolution=conv.tolist())
        if importlib.util.find_spec(module) is None:
            result.note = f"{module} is not installed"
            result.cross_correlation = result.convolution = None
            report.results.append(result)
            continue
        try:
            out = np.asarray(run(xi, ki), dtype=np.float64)
        except Exception as error:  # a broken install must not stop the other probes
            result.verdict = "error"
            result.note = f"{type(error).__name__}: {error}".splitlines()[0]
            report.results.append(result)
            continue
        result.output = out.tolist()
        if out.shape == corr.shape and np.allclose(out, corr, atol=1e-9):
            result.verdict = CROSS
        elif out.shape == conv.shape and np.allclose(out, conv, atol=1e-9):
            result.verdict = CONV
        else:
            result.verdict = "neither"
            result.note = "matches neither candidate (a different boundary or alignment?)"
        report.results.append(result)
    return report


def _row(values: list | None, row: int) -> str:
    if values is None:
        return "-"
    return " ".join(f"{v:g}" for v in np.asarray(values, dtype=float)[row])


def format_conventions(report: ConventionsReport) -> str:
    """A table: each call, its verdict, and its output's middle row next to both candidates.

    Examples
    --------
    >>> print(format_conventions(probe_conventions(["kernelscope"])).splitlines()[0])
    Probe: a 5x6 integer image and the asymmetric 3x3 kernel [[1, 2, 0], [0, 1, 0], [0, 0, -3]], zero padding, 'same' size.
    """
    lines = [f"Probe: a 5x6 integer image and the asymmetric 3x3 kernel {report.kernel}, zero padding, "
             f"'same' size.",
             "Evidence: row 2 of each output (row 0 for the 1-D numpy functions) next to kernelscope's "
             "cross-correlation xcorr(x, k) and convolution conv(x, k) = xcorr(x, flip(k)).", ""]
    header = ("call", "computes", "output", "xcorr", "conv")
    rows = []
    for r in report.results:
        row = 0 if "(1-D)" in r.call else 2
        verdict = r.verdict + (f" ({r.note})" if r.verdict in ("skipped", "error") else "")
        rows.append((r.call, verdict, _row(r.output, row), _row(r.cross_correlation, row),
                     _row(r.convolution, row)))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
