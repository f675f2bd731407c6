"""Reading small matrices typed on a command line or stored in files.

Inline text: rows separated by ``;`` or new lines, numbers by spaces or commas;
``|`` separates channels (``"1 2; 3 4 | 5 6; 7 8"`` is 2 channels of 2x2, read
as shape ``(1, 2, 2, 2)``). Files: ``.npy`` (any numeric array, no pickles),
``.csv`` (commas) and ``.txt`` (whitespace). Integers stay integers, so the
engine computes with them exactly.

Files are matrices a person reads: a file over :data:`MAX_MATRIX_BYTES` (16 MiB of
``.npy`` array data, or of ``.csv``/``.txt`` text) is refused before it is read, the
``.npy`` size from its header (:mod:`kernelscope.ops.npyfiles`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.ops.npyfiles import load_npy

__all__ = ["parse_matrix", "MATRIX_SUFFIXES", "MAX_MATRIX_BYTES"]

MATRIX_SUFFIXES = (".npy", ".csv", ".txt")
#: The largest matrix file read (16 MiB): far above what explain shows (20,000 products), far below memory.
MAX_MATRIX_BYTES = 1 << 24
_INT = re.compile(r"^[+-]?\d+$")


def parse_matrix(value: str | os.PathLike, name: str = "matrix") -> np.ndarray:
    """Parse ``value`` (inline text or a file path) into an int64 or float64 array.

    Parameters
    ----------
    value : str or path
        ``"9 8 7; 6 5 4"``, ``"1,0;0,-1"``, channels joined by ``|``, or a path to a
        ``.npy``, ``.csv`` or whitespace ``.txt`` file.
    name : str
        The option's name for error messages (``"--input"``).

    Returns
    -------
    ndarray of shape (H, W), or (1, C, H, W) for inline text with ``|``, or what the ``.npy`` holds

    Examples
    --------
    >>> parse_matrix("9 8 7; 6 5 4")
    array([[9, 8, 7],
           [6, 5, 4]])
    >>> parse_matrix("0.5, -1; 2, 0").dtype
    dtype('float64')
    >>> parse_matrix("1 2; 3 4 | 5 6; 7 8").shape
    (1, 2, 2, 2)
    >>> parse_matrix("1 2; 3", "--input")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: --input: row 2 has 1 number but row 1 has 2 numbers; every row needs the same count
    """
    text = os.fspath(value)
    if isinstance(value, os.PathLike) or text.lower().endswith(MATRIX_SUFFIXES) or (
            text and os.path.isfile(text)):
        return _load_file(Path(text), name)
    channels = [_parse_text(part, name) for part in text.split("|")]
    if len(channels) == 1:
        return channels[0]
    shapes = {c.shape for c in channels}
    if len(shapes) > 1:
        raise KernelscopeError(f"{name}: channels separated by '|' must have the same shape; got "
                               f"{', '.join('x'.join(map(str, c.shape)) for c in channels)}")
    stacked = np.stack(channels)  # (C, H, W)
    return stacked[None]  # (1, C, H, W)


def _parse_text(text: str, name: str) -> np.ndarray:
    rows = [row.strip() for row in re.split(r"[;\n]", text)]
    rows = [row for row in rows if row]
    if not rows:
        raise KernelscopeError(f"{name}: got no numbers in {text!r}; write rows like '1 2 3; 4 5 6'")
    tokens = [[t for t in re.split(r"[\s,]+", row) if t] for row in rows]
    for r, row in enumerate(tokens):
        if len(row) != len(tokens[0]):
            def count(k: int) -> str:
                return f"{k} number" + ("" if k == 1 else "s")
            raise KernelscopeError(
                f"{name}: row {r + 1} has {count(len(row))} but row 1 has {count(len(tokens[0]))}; "
                f"every row needs the same count")
    integer = all(_INT.match(t) for row in tokens for t in row)
    values = []
    for r, row in enumerate(tokens):
        for c, token in enumerate(row):
            try:
                values.append(int(token) if integer else float(token))
            except ValueError:
                raise KernelscopeError(f"{name}: {token!r} is not a number (row {r + 1}, column "
                                       f"{c + 1})") from None
    array = np.array(values, dtype=np.int64 if integer else np.float64)
    if not integer and not np.isfinite(array).all():
        raise KernelscopeError(f"{name}: only finite numbers are allowed; got {text.strip()!r}")
    return array.reshape(len(tokens), len(tokens[0]))


def _load_file(path: Path, name: str) -> np.ndarray:
    if not path.is_file():
        raise KernelscopeError(f"{name}: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = load_npy(path, repr(str(path)), max_bytes=MAX_MATRIX_BYTES)
        except KernelscopeError as error:
            raise KernelscopeError(f"{name}: {error}") from None
        if array.dtype.kind not in "biuf":
            raise KernelscopeError(f"{name}: {str(path)!r} holds {array.dtype} values; numbers "
                                   f"are needed")
        return array
    if suffix not in (".csv", ".txt"):
        raise KernelscopeError(f"{name}: cannot read {str(path)!r}; use a .npy, .csv or .txt file")
    size = path.stat().st_size
    if size > MAX_MATRIX_BYTES:
        raise KernelscopeError(f"{name}: {str(path)!r} is too large: {size} bytes; at most {MAX_MATRIX_BYTES} "
                               f"bytes of text are read")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise KernelscopeError(f"{name}: cannot read {str(path)!r} ({error})") from None
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    body = "\n".join(line.replace(",", " ") if suffix == ".csv" else line for line in lines)
    return _parse_text(body, f"{name} ({path.name})")
