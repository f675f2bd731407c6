"""The bank by name: every classical kernel with its family and what it detects.

``get_kernel(name, **params)`` builds a kernel; ``kernel_names()`` lists them;
``kernel_info(name)`` says what a kernel detects, its family, its parameters and
whether its size can be changed (``get_kernel(name, size=k)``).

A kernel can also be written as a *spec* string, ``"name:key=value:key=value"``
(``"gabor:theta=45deg:frequency=0.2"``), which the CLI uses.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError, suggest
from kernelscope.kernels import centre_surround, edges, gabor, smoothing

__all__ = ["KernelInfo", "FAMILIES", "get_kernel", "kernel_names", "kernel_info", "parse_kernel_spec",
           "parse_value", "resolve_kernel", "format_kernel"]

FAMILIES = ("edge", "smoothing", "laplacian", "centre-surround", "gabor", "other")


@dataclass(frozen=True)
class KernelInfo:
    """What a named kernel is.

    Attributes
    ----------
    name : str
    family : str
        One of ``FAMILIES``.
    description : str
        One line: what the kernel detects or does (sign included for signed kernels).
    params : dict of str to object
        Parameter names and defaults accepted by ``get_kernel(name, **params)``.
    shape : tuple of int
        Shape with the default parameters.
    """

    name: str
    family: str
    description: str
    builder: Callable[..., np.ndarray] = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, int] = (0, 0)

    @property
    def resizable(self) -> bool:
        """True when ``get_kernel(name, size=k)`` works (False: fixed-size kernel)."""
        return "size" in self.params

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (name, family, description, params, shape, resizable)."""
        return {"name": self.name, "family": self.family, "description": self.description,
                "params": dict(self.params), "shape": list(self.shape), "resizable": self.resizable}


_REGISTRY: dict[str, KernelInfo] = {}


def _register(name: str, family: str, description: str, builder: Callable[..., np.ndarray]) -> None:
    params = {p.name: p.default for p in inspect.signature(builder).parameters.values()}
    shape = builder().shape
    _REGISTRY[name] = KernelInfo(name, family, description, builder, params, shape)


def _gabor(frequency: float | None = None, wavelength: float | None = None, theta: float = 0.0,
           phase: float = 0.0, sigma: float | None = None, aspect: float = 1.0, size: int | None = None,
           zero_mean: bool = False, parity: str | None = None) -> np.ndarray:
    if frequency is None and wavelength is None:
        frequency = 0.25  # 4-pixel wavelength: fine stripes, visible on any sample image
    return gabor.gabor_kernel(frequency=frequency, wavelength=wavelength, theta=theta, phase=phase,
                              sigma=sigma, aspect=aspect, size=size, zero_mean=zero_mean, parity=parity)


def _gabor_odd(frequency: float | None = None, wavelength: float | None = None, theta: float = 0.0,
               sigma: float | None = None, aspect: float = 1.0, size: int | None = None) -> np.ndarray:
    return _gabor(frequency, wavelength, theta, gabor.ODD, sigma, aspect, size)


def _part(pair: Callable[[], tuple[np.ndarray, np.ndarray]], index: int) -> Callable[[], np.ndarray]:
    def build() -> np.ndarray:
        return pair()[index]

    return build


def _build_bank() -> None:
    r = _register
    r("identity", "other", "a 1 at the centre: leaves the image unchanged",
      lambda size=3: smoothing.identity_kernel(size))
    r("box", "smoothing", "mean over a size x size window: blurs, sums to 1",
      lambda size=3: smoothing.box_kernel(size))
    r("gaussian", "smoothing", "sampled Gaussian blur (sigma, size), sums to 1",
      lambda sigma=1.0, size=None: smoothing.gaussian_kernel(sigma, size))
    r("sharpen", "other", "identity minus the 4-neighbour Laplacian: boosts fine detail",
      edges.sharpen_kernel)
    r("emboss", "other", "identity plus the diagonal Sobel: relief look, light from the upper left",
      edges.emboss_kernel)
    r("roberts_d45", "edge", "2x2 Roberts cross: positive where intensity increases to the lower right",
      lambda: edges.roberts_kernels()[0])
    r("roberts_d135", "edge", "2x2 Roberts cross: positive where intensity increases to the lower left",
      lambda: edges.roberts_kernels()[1])
    prewitt = "Prewitt (box-smoothed difference)"
    r("prewitt_x", "edge", f"{prewitt}: vertical edges, positive where intensity increases to the right",
      _part(edges.prewitt_kernels, 0))
    r("prewitt_y", "edge", f"{prewitt}: horizontal edges, positive where intensity increases downwards",
      _part(edges.prewitt_kernels, 1))
    r("prewitt_d45", "edge", "Prewitt diagonal: positive where intensity increases to the lower right",
      lambda: edges.rotate_ring(edges.prewitt_kernels()[0], 1))
    r("prewitt_d135", "edge", "Prewitt diagonal: positive where intensity increases to the lower left",
      lambda: edges.rotate_ring(edges.prewitt_kernels()[0], 3))
    r("sobel_x", "edge", "Sobel (binomial-smoothed difference): vertical edges, positive where "
      "intensity increases to the right", lambda size=3: edges.sobel_kernels(size)[0])
    r("sobel_y", "edge", "Sobel: horizontal edges, positive where intensity increases downwards",
      lambda size=3: edges.sobel_kernels(size)[1])
    r("sobel_d45", "edge", "Sobel diagonal: positive where intensity increases to the lower right",
      lambda: edges.rotate_ring(edges.sobel_kernels()[0], 1))
    r("sobel_d135", "edge", "Sobel diagonal: positive where intensity increases to the lower left",
      lambda: edges.rotate_ring(edges.sobel_kernels()[0], 3))
    r("sobel5_x", "edge", "5x5 Sobel (OpenCV's): smoother vertical-edge detector, positive to the right",
      lambda: edges.sobel_kernels(5)[0])
    r("sobel5_y", "edge", "5x5 Sobel (OpenCV's): smoother horizontal-edge detector, positive downwards",
      lambda: edges.sobel_kernels(5)[1])
    scharr = "Scharr (rotation-optimised 3-10-3 smoothing)"
    r("scharr_x", "edge", f"{scharr}: vertical edges, positive where intensity increases to the right",
      _part(edges.scharr_kernels, 0))
    r("scharr_y", "edge", f"{scharr}: horizontal edges, positive where intensity increases downwards",
      _part(edges.scharr_kernels, 1))
    r("laplacian", "laplacian", "4-neighbour Laplacian (negative centre): spots and thin lines, "
      "zero on ramps; bright dot -> negative", edges.laplacian_4)
    r("laplacian8", "laplacian", "8-neighbour Laplacian (negative centre): spots and lines in all "
      "8 directions", edges.laplacian_8)
    r("log", "laplacian", "Laplacian of Gaussian (sigma, size; negative centre): blobs of radius "
      "~sigma*sqrt(2), bright blob -> negative", lambda sigma=1.4, size=None: centre_surround.log_kernel(sigma, size))
    r("dog_on", "centre-surround", "difference of Gaussians, on-centre (sigma, ratio, size): "
      "bright spot on dark surround -> positive",
      lambda sigma=1.0, ratio=1.6, size=None: centre_surround.dog_kernel(sigma, ratio, size, "on"))
    r("dog_off", "centre-surround", "difference of Gaussians, off-centre (sigma, ratio, size): "
      "dark spot on bright surround -> positive",
      lambda sigma=1.0, ratio=1.6, size=None: centre_surround.dog_kernel(sigma, ratio, size, "off"))
    r("gabor", "gabor", "even (cosine) Gabor (frequency or wavelength, theta, phase, sigma, aspect, "
      "size): bars and stripes across direction theta", _gabor)
    r("gabor_odd", "gabor", "odd (sine) Gabor: edges across direction theta, positive where "
      "intensity increases along theta", _gabor_odd)


_build_bank()


def kernel_names(family: str | None = None) -> list[str]:
    """Names of the registered kernels, in bank order (optionally of one family).

    Examples
    --------
    >>> kernel_names("smoothing")
    ['box', 'gaussian']
    >>> "sobel_x" in kernel_names()
    True
    """
    if family is not None and family not in FAMILIES:
        raise KernelscopeError(suggest(family, FAMILIES, what="kernel family"))
    return [n for n, info in _REGISTRY.items() if family is None or info.family == family]


def kernel_info(name: str) -> KernelInfo:
    """The :class:`KernelInfo` of a named kernel (unknown names suggest the closest).

    Examples
    --------
    >>> info = kernel_info("sobel_x")
    >>> info.family, info.shape, info.resizable
    ('edge', (3, 3), True)
    >>> kernel_info("scharr_x").resizable
    False
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise KernelscopeError(suggest(str(name), _REGISTRY, what="kernel"))
    return _REGISTRY[name]


def get_kernel(name: str, **params: Any) -> np.ndarray:
    """Build the named kernel (float64, ``(kh, kw)``) with optional parameters.

    Parameters
    ----------
    name : str
        A name from :func:`kernel_names`.
    **params
        Parameters of that kernel (see ``kernel_info(name).params``), e.g. ``sigma``,
        ``size`` (for resizable kernels), ``theta`` (radians).

    Examples
    --------
    >>> get_kernel("sobel_x").astype(int)
    array([[-1,  0,  1],
           [-2,  0,  2],
           [-1,  0,  1]])
    >>> get_kernel("gaussian", sigma=2.0, size=7).shape
    (7, 7)
    >>> get_kernel("scharr_x", size=5)
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: kernel 'scharr_x' has a fixed size (3, 3) and takes no parameters; got size
    """
    info = kernel_info(name)
    unknown = [p for p in params if p not in info.params]
    if unknown:
        if not info.params:
            raise KernelscopeError(
                f"kernel {name!r} has a fixed size {info.shape} and takes no parameters; got {', '.join(unknown)}"
            )
        raise KernelscopeError(
            f"kernel {name!r} takes no parameter {unknown[0]!r} (parameters: {', '.join(info.params)})"
        )
    kernel = np.asarray(info.builder(**params), dtype=np.float64)
    return kernel


# ---------------------------------------------------------------------------------------------
# Spec strings: "name:key=value:key=value"

_DEG = re.compile(r"^([-+]?[0-9.]+(?:e[-+]?\d+)?)deg$", re.IGNORECASE)
_PI = re.compile(r"^([-+]?)(?:([0-9.]+)\*?)?pi(?:/([0-9.]+))?$", re.IGNORECASE)


def parse_value(text: str) -> Any:
    """Parse a parameter value written on the command line.

    Integers, floats, ``45deg`` (degrees, converted to radians), ``pi``, ``pi/4``, ``-pi/2``,
    ``2pi``, ``true``/``false``, ``none``; anything else stays a string.

    Examples
    --------
    >>> parse_value("3"), parse_value("0.5"), parse_value("none"), parse_value("true")
    (3, 0.5, None, True)
    >>> round(parse_value("90deg"), 6), round(parse_value("-pi/2"), 6)
    (1.570796, -1.570796)
    """
    text = text.strip()
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    match = _DEG.match(text)
    if match:
        return math.radians(float(match.group(1)))
    match = _PI.match(text)
    if match:
        sign, factor, divisor = match.groups()
        value = math.pi * (float(factor) if factor else 1.0) / (float(divisor) if divisor else 1.0)
        return -value if sign == "-" else value
    return text


def parse_kernel_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value:..."`` into the name and its parameters (checked against the bank).

    Examples
    --------
    >>> parse_kernel_spec("gaussian:sigma=2:size=9")
    ('gaussian', {'sigma': 2, 'size': 9})
    >>> parse_kernel_spec("gabor:theta=bad=1")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: kernel parameter must be key=value, got 'theta=bad=1' in 'gabor:theta=bad=1'
    """
    parts = [p.strip() for p in str(spec).split(":")]
    name, params = parts[0], {}
    kernel_info(name)  # unknown names fail here, with suggestions
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or not key or not value or "=" in value:
            raise KernelscopeError(f"kernel parameter must be key=value, got {part!r} in {spec!r}")
        params[key.strip()] = parse_value(value)
    return name, params


def resolve_kernel(kernel_or_name: np.ndarray | str, **params: Any) -> tuple[np.ndarray, str]:
    """``(kernel, label)`` from an array, a bank name or a spec string (params merged in).

    Examples
    --------
    >>> k, label = resolve_kernel("gaussian:sigma=1", size=3)
    >>> k.shape, label
    ((3, 3), 'gaussian:sigma=1:size=3')
    """
    if isinstance(kernel_or_name, str):
        name, spec_params = parse_kernel_spec(kernel_or_name)
        spec_params.update(params)
        label = ":".join([name] + [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in spec_params.items()])
        return get_kernel(name, **spec_params), label
    if params:
        raise KernelscopeError(
            f"kernel parameters ({', '.join(params)}) apply only to named kernels, not to an array"
        )
    kernel = np.asarray(kernel_or_name)
    if kernel.ndim != 2 or kernel.size == 0:
        raise KernelscopeError(f"kernel must be a non-empty 2-D array (kh, kw), got shape {kernel.shape}")
    if not np.issubdtype(kernel.dtype, np.number) or np.issubdtype(kernel.dtype, np.complexfloating):
        raise KernelscopeError(f"kernel must hold real numbers, got dtype {kernel.dtype}")
    kernel = kernel.astype(np.float64)
    if not np.isfinite(kernel).all():
        raise KernelscopeError("kernel contains NaN or infinite values")
    return kernel, f"array {kernel.shape[0]}x{kernel.shape[1]}"


# ---------------------------------------------------------------------------------------------
# Textbook printing


def _common_denominator(kernel: np.ndarray, max_denominator: int = 1024) -> int | None:
    """Smallest d <= max_denominator with ``kernel * d`` all integers (None if there is none)."""
    for d in range(1, max_denominator + 1):
        scaled = kernel * d
        if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-9 * max(1, d)):
            return d
    return None


def format_kernel(kernel: np.ndarray, *, decimals: int = 3) -> str:
    """The kernel's numbers as a textbook matrix, with a common factor when there is one.

    Examples
    --------
    >>> print(format_kernel(get_kernel("sobel_x")))
    [ -1   0   1 ]
    [ -2   0   2 ]
    [ -1   0   1 ]
    >>> print(format_kernel(get_kernel("box")))
    1/9 x
    [ 1  1  1 ]
    [ 1  1  1 ]
    [ 1  1  1 ]
    >>> print(format_kernel(np.array([[0.5, -0.25], [0.125, 0.0]]) * np.pi))
    [  1.571  -0.785 ]
    [  0.393   0.000 ]
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise KernelscopeError(f"format_kernel needs a 2-D kernel, got shape {kernel.shape}")
    header = ""
    d = _common_denominator(kernel)
    if d is not None:
        cells = [[str(int(v)) for v in row] for row in np.round(kernel * d)]
        if d > 1:
            header = f"1/{d} x\n"
    else:
        biggest = float(np.abs(kernel).max())
        if biggest > 0:  # at least 3 significant digits on the largest value
            decimals = max(decimals, 2 - math.floor(math.log10(biggest)))
        cells = [[f"{v:.{decimals}f}" for v in row] for row in np.round(kernel, decimals) + 0.0]
    width = max(len(c) for row in cells for c in row)
    pad = 2 if d is None else 1
    lines = ["[ " + " ".join(c.rjust(width + pad) for c in row) + " ]" for row in cells]
    return header + "\n".join(lines)
