"""Atomic writes, and JSON that is always valid.

Every file is written to a temporary file in the same directory, flushed to disk,
then moved over the final name with ``os.replace``: a crash mid-write never leaves
a broken file under the final name (the old file, if any, stays whole). The file
gets the permissions a plain ``open(path, "w")`` would give it, ``0o666`` minus
the umask, not the ``0o600`` of :func:`tempfile.mkstemp`.

JSON written here is strict: NaN and infinities (which ``json.dumps`` writes as
the invalid tokens ``NaN`` and ``Infinity``) become ``null``; NumPy values become
plain numbers and lists; paths become strings.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "write_json", "write_npz", "write_bytes", "finite_or_none", "json_safe",
           "json_default", "dumps_json"]


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file, fsync it, then move it to ``path``.

    The file gets mode ``0o666 & ~umask``, like any file a program creates. An
    ``OSError`` (no permission, disk full, ...) names ``path``, not the temporary
    file, and leaves no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _naming(error, path) from error
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:
            raise _naming(error, path) from error
        raise
    return path


def _naming(error: OSError, path: Path) -> OSError:
    """The same error (same subclass and errno), naming the file the caller asked for."""
    return OSError(error.errno, error.strerror or str(error), str(path))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON (NaN and infinities as null), atomically."""
    return write_bytes(path, (dumps_json(obj) + "\n").encode("utf-8"))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write arrays to an ``.npz`` file atomically (keys may contain dots)."""
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def finite_or_none(value: Any) -> float | None:
    """``float(value)``, or ``None`` when it is missing, NaN or infinite (JSON has no NaN).

    Examples
    --------
    >>> finite_or_none(np.float32(0.5)), finite_or_none(float("nan")), finite_or_none(None)
    (0.5, None, None)
    >>> finite_or_none(-np.inf) is None
    True
    """
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON-able Python: non-finite floats as None, NumPy values as numbers and lists.

    Dicts, lists and tuples are copied recursively (tuples become lists); paths become strings.

    Examples
    --------
    >>> json_safe({"a": [np.float32(1.5), float("inf")], "b": np.arange(2), "c": (np.int64(3), np.nan)})
    {'a': [1.5, None], 'b': [0, 1], 'c': [3, None]}
    """
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite_or_none(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_default(obj: Any) -> Any:
    """A ``default=`` for :func:`json.dumps`: NumPy values and arrays (NaN as null) and paths.

    ``json.dumps`` never calls ``default`` for a Python float, so a NaN inside plain
    data is still written as ``NaN``: use :func:`dumps_json` (or :func:`json_safe`
    first) for JSON that is always valid.

    Examples
    --------
    >>> json.dumps([np.float32(np.nan), np.int16(2), np.ones(2)], default=json_default)
    '[null, 2, [1.0, 1.0]]'
    """
    if isinstance(obj, (np.generic, np.ndarray, Path)):
        return json_safe(obj.item() if isinstance(obj, np.generic) else obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_safe`): never ``NaN`` or ``Infinity``.

    Examples
    --------
    >>> dumps_json({"loss": float("nan"), "acc": np.float64(0.5)}, indent=None)
    '{"loss": null, "acc": 0.5}'
    """
    return json.dumps(json_safe(obj), indent=indent, default=json_default, allow_nan=False)
