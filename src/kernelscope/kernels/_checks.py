"""Validation of kernel parameters: one-line errors that name the parameter, value and allowed range."""

from __future__ import annotations

import math
import numbers

from kernelscope.errors import KernelscopeError

# Kernels larger than this are almost surely a typo (sigma=500 instead of 5); they would also
# take seconds to apply by the direct method.
MAX_SIZE = 1001


def positive_float(name: str, value: object, *, maximum: float | None = None) -> float:
    """``value`` as a finite float > 0 (and <= ``maximum`` when given), else a KernelscopeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise KernelscopeError(f"{name} must be a number > 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise KernelscopeError(f"{name} must be a finite number > 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise KernelscopeError(f"{name} must be at most {maximum:g}, got {value!r}")
    return value


def finite_float(name: str, value: object) -> float:
    """``value`` as a finite float, else a KernelscopeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise KernelscopeError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def odd_size(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an odd int in ``[minimum, MAX_SIZE]`` (a kernel with a centre pixel)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise KernelscopeError(f"{name} must be an odd integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum or value % 2 == 0 or value > MAX_SIZE:
        raise KernelscopeError(
            f"{name} must be an odd integer between {minimum} and {MAX_SIZE} "
            f"(the kernel needs a centre pixel), got {value}"
        )
    return value


def size_from_radius(radius: float) -> int:
    """The odd size ``2 * r + 1`` that covers ``radius`` pixels on each side of the centre."""
    size = 2 * int(radius) + 1
    if size > MAX_SIZE:
        raise KernelscopeError(
            f"the kernel would be {size}x{size} pixels (more than {MAX_SIZE}); use a smaller sigma "
            "or give size explicitly"
        )
    return size
