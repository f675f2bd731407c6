"""Reading user ``.npy`` / ``.npz`` files safely: sizes checked from NumPy's header before loading.

Every array kernelscope reads from a user's file (``explain --input/--kernel``, image
sets, concept masks) goes through :func:`load_npy` or :func:`load_npz`. Before any data
is read, the header is parsed with :mod:`numpy.lib.format` and the file is refused, with
one :class:`~kernelscope.errors.KernelscopeError` line, when

* it is not a ``.npy`` file (0 bytes, bad magic, a damaged header) or a valid ``.npz``;
* its dtype holds Python objects (``dtype=object``, ragged arrays): those need pickle,
  which is never used (``allow_pickle=False``);
* its arrays hold more than ``max_bytes`` (:data:`MAX_ARRAY_BYTES`, 1 GiB, by default),
  so a 3 GB file is refused in microseconds instead of being read first;
* the header promises more data than the file holds (a *lying* header, which would
  otherwise make NumPy allocate the promised size and fail with ``MemoryError``).

It lives in the engine because the engine reads matrices from files too
(:mod:`kernelscope.ops.matrices`) and may import only NumPy, SciPy and itself.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import IO

import numpy as np
import numpy.lib.format as npformat

from kernelscope.errors import KernelscopeError

__all__ = ["MAX_ARRAY_BYTES", "read_npy_header", "load_npy", "load_npz", "npz_names"]

#: The most bytes of array data kernelscope reads from one user ``.npy``/``.npz`` file (1 GiB).
MAX_ARRAY_BYTES = 1 << 30


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} bytes"


def read_npy_header(handle: IO[bytes], available: int, what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Parse the ``.npy`` header at the start of ``handle``; check it against ``available`` bytes.

    Parameters
    ----------
    handle : binary file object
        Positioned at the start of the ``.npy`` data.
    available : int
        How many bytes the stream holds (the file's size, or a zip member's declared size).
    what : str
        Names the file in error messages (``"'x.npy'"``, ``"array 'a' of 'x.npz'"``).

    Returns
    -------
    shape : tuple of int
    dtype : numpy.dtype
    nbytes : int
        The size of the array data the header promises.

    Examples
    --------
    >>> import io
    >>> buffer = io.BytesIO(); np.save(buffer, np.zeros((2, 3)))
    >>> read_npy_header(io.BytesIO(buffer.getvalue()), len(buffer.getvalue()), "x")
    ((2, 3), dtype('float64'), 48)
    >>> read_npy_header(io.BytesIO(buffer.getvalue()[:150]), 150, "x")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: cannot read x as a .npy array (its header promises 48 bytes, float64 of shape (2, 3), but only 22 follow it: truncated, or a header that lies about its size)
    """
    if available == 0:  # NumPy's own words for a 0-byte file
        raise KernelscopeError(f"cannot read {what} as a .npy array (No data left in file)")
    try:
        version = npformat.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(handle)
        else:  # (3, 0): utf-8 field names; read by NumPy's own (private) reader
            shape, fortran, dtype = npformat._read_array_header(handle, version)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, AttributeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise KernelscopeError(f"cannot read {what} as a .npy array ({reason})") from None
    if dtype.hasobject:
        raise KernelscopeError(f"cannot read {what} as a .npy array (it holds Python objects, dtype {dtype}: "
                               f"a ragged or object array; only numbers are read, pickle is never used)")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    rest = available - handle.tell()
    if nbytes > rest:
        raise KernelscopeError(
            f"cannot read {what} as a .npy array (its header promises {nbytes} bytes, {dtype} of shape "
            f"{tuple(shape)}, but only {max(rest, 0)} follow it: truncated, or a header that lies about its size)")
    return tuple(int(n) for n in shape), dtype, nbytes


def _too_large(what: str, nbytes: int, max_bytes: int, detail: str) -> KernelscopeError:
    return KernelscopeError(f"{what} is too large: {detail} is {_size(nbytes)}; at most {_size(max_bytes)} "
                            f"of array data is read from a file")


def load_npy(path: str | os.PathLike, what: str | None = None, *, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """Load a ``.npy`` file after checking its header (see the module docstring); no pickles.

    Examples
    --------
    >>> load_npy("/nonexistent.npy")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: '/nonexistent.npy' does not exist
    """
    path = Path(path)
    what = what or repr(str(path))
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            shape, dtype, nbytes = read_npy_header(handle, size, what)
            if nbytes > max_bytes:
                raise _too_large(what, nbytes, max_bytes, f"its {dtype} array of shape {shape}")
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
    except FileNotFoundError:
        raise KernelscopeError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise KernelscopeError(f"{what} is a directory, not a .npy file") from None
    except KernelscopeError:
        raise
    except (ValueError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise KernelscopeError(f"cannot read {what} as a .npy array ({reason})") from None


def npz_names(path: str | os.PathLike, what: str | None = None) -> list[str]:
    """The names of the arrays in a ``.npz`` file, in stored order (nothing is decompressed)."""
    return list(_npz(path, what or repr(str(path)), None, 0, list_only=True))


def load_npz(path: str | os.PathLike, what: str | None = None, *, names: list[str] | None = None,
             max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """Load the arrays ``names`` (default: all) of a ``.npz`` file after checking every header.

    ``max_bytes`` limits the total of the arrays loaded. Keys are the names NumPy gives
    (``images`` for ``images.npy`` inside the archive).

    Examples
    --------
    >>> load_npz("/nonexistent.npz")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: '/nonexistent.npz' does not exist
    """
    return _npz(path, what or repr(str(path)), names, max_bytes)


def _npz(path: str | os.PathLike, what: str, names: list[str] | None, max_bytes: int, *,
         list_only: bool = False) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise KernelscopeError(f"cannot read {what} as a .npz archive (it is empty: 0 bytes)")
            with zipfile.ZipFile(handle) as archive:
                members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()
                           if info.filename.endswith(".npy")}
                if list_only:
                    return dict.fromkeys(members)
                wanted = list(members) if names is None else [name for name in names if name in members]
                total = 0
                for name in wanted:
                    info = members[name]
                    with archive.open(info) as member:
                        shape, dtype, nbytes = read_npy_header(member, info.file_size, f"array {name!r} of {what}")
                    total += nbytes
                    if total > max_bytes:
                        detail = (f"array {name!r} ({dtype}, shape {shape})" if len(wanted) == 1
                                  else f"the total of its arrays up to {name!r}")
                        raise _too_large(what, total, max_bytes, detail)
                arrays = {}
                for name in wanted:
                    with archive.open(members[name]) as member:
                        arrays[name] = npformat.read_array(member, allow_pickle=False)
                return arrays
    except FileNotFoundError:
        raise KernelscopeError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise KernelscopeError(f"{what} is a directory, not a .npz file") from None
    except KernelscopeError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise KernelscopeError(f"cannot read {what} as a .npz archive (not a zip file, or truncated: {reason})"
                               ) from None
