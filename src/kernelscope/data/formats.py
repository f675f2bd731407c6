"""The user's own data in standard formats: MNIST IDX, CIFAR-10 python batches, image folders.

Loading never executes code from a file: CIFAR-10 pickles go through
:func:`safe_unpickle`, which only rebuilds NumPy arrays, lists, dicts, strings and numbers.
Every malformed file raises a one-line :class:`~kernelscope.errors.KernelscopeError`.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["read_idx", "write_idx", "load_idx_dataset", "safe_unpickle", "load_cifar10",
           "load_image_folder", "IMAGE_SUFFIXES"]

# IDX type byte -> (numpy dtype, big-endian)
_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise KernelscopeError(f"file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise KernelscopeError(f"file {str(path)!r} is a corrupt or truncated gzip file ({error})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), raw or gzip-compressed.

    The header is two zero bytes, a type byte (0x08 = uint8, ...), the number of
    dimensions, then one big-endian uint32 per dimension.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ndarray of the shape the header declares

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
    >>> _ = write_idx(p, np.arange(5, dtype=np.uint8))
    >>> read_idx(p).tolist()
    [0, 1, 2, 3, 4]
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise KernelscopeError(f"file {str(path)!r} is not an IDX file: bad magic number "
                               f"{data[:4].hex() or 'empty'} (expected 0000 + type + ndim)")
    kind, ndim = data[2], data[3]
    if kind not in _IDX_TYPES:
        raise KernelscopeError(f"file {str(path)!r}: unknown IDX type byte 0x{kind:02x} "
                               f"(allowed: {', '.join(f'0x{k:02x}' for k in _IDX_TYPES)})")
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise KernelscopeError(f"file {str(path)!r}: truncated IDX header (ndim={ndim})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[kind]
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != expected:
        raise KernelscopeError(f"file {str(path)!r}: header declares shape {shape} ({expected} bytes) "
                               f"but the file holds {body} bytes ({'truncated' if body < expected else 'extra data'})")
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64) as an IDX file.

    A ``.gz`` suffix writes it gzip-compressed.
    """
    array = np.asarray(array)
    codes = {v.newbyteorder("=").str: k for k, v in _IDX_TYPES.items()}
    key = array.dtype.newbyteorder("=").str
    if key not in codes:
        raise KernelscopeError(f"cannot write dtype {array.dtype} as IDX (allowed: uint8, int8, int16, int32, "
                               "float32, float64)")
    code = codes[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(_IDX_TYPES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _find_idx_pair(directory: Path, split: str) -> tuple[Path, Path] | None:
    def find(kind: str) -> Path | None:
        for pattern in (f"{split}-{kind}*", f"{split}_{kind}*"):
            matches = sorted(p for p in directory.glob(pattern) if p.is_file())
            if matches:
                return matches[0]
        return None

    images, labels = find("images"), find("labels")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        raise KernelscopeError(f"directory {str(directory)!r} has {split} {'labels' if images is None else 'images'} "
                               f"but no {split} {'images' if images is None else 'labels'} IDX file")
    return images, labels


def _idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim not in (3, 4):
        raise KernelscopeError(f"IDX images {str(images_path)!r} must have 3 dims (N, H, W) or 4 (N, H, W, C), "
                               f"got shape {images.shape}")
    if labels.ndim != 1:
        raise KernelscopeError(f"IDX labels {str(labels_path)!r} must have 1 dim, got shape {labels.shape}")
    if len(labels) != len(images):
        raise KernelscopeError(f"label/image count mismatch: {str(labels_path)!r} has {len(labels)} labels "
                               f"but {str(images_path)!r} has {len(images)} images")
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(x), labels.astype(np.int64)


def load_idx_dataset(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str], tuple | None]:
    """Load MNIST-style IDX files: a directory, or an images file with its labels beside it.

    A directory must hold ``train-images*`` and ``train-labels*`` (and optionally
    ``t10k-images*`` / ``t10k-labels*`` or ``test-*``, which then define the test split).
    An images file ``...images...`` finds its labels by replacing ``images`` with ``labels``
    and ``idx3`` with ``idx1`` in the name.

    Returns
    -------
    x, y, classes, test
        ``test`` is ``(x_test, y_test)`` or None (split by the caller).
    """
    path = Path(path)
    if path.is_dir():
        train = _find_idx_pair(path, "train")
        if train is None:
            raise KernelscopeError(f"directory {str(path)!r} holds no train-images*/train-labels* IDX files")
        test_pair = _find_idx_pair(path, "t10k") or _find_idx_pair(path, "test")
        x, y = _idx_pair(*train)
        test = _idx_pair(*test_pair) if test_pair else None
    else:
        if not path.exists():
            raise KernelscopeError(f"IDX path {str(path)!r} does not exist")
        name = path.name
        if "images" not in name:
            raise KernelscopeError(f"IDX images file name {name!r} must contain 'images' so that its labels "
                                   "file ('labels' in place of 'images') can be found")
        labels = path.with_name(name.replace("images", "labels").replace("idx3", "idx1"))
        if not labels.exists():
            raise KernelscopeError(f"labels file {str(labels)!r} for {str(path)!r} does not exist")
        x, y = _idx_pair(path, labels)
        test = None
    all_labels = y if test is None else np.concatenate([y, test[1]])
    if all_labels.min() < 0:
        raise KernelscopeError(f"IDX labels must be >= 0, got {int(all_labels.min())}")
    classes = [str(k) for k in range(int(all_labels.max()) + 1)]
    if len(np.unique(y)) < 2:
        raise KernelscopeError(f"IDX data {str(path)!r} has a single class; a classifier needs at least 2")
    return x, y, classes, test


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only NumPy arrays and plain containers (no code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
        ("builtins", "bytes"), ("builtins", "bytearray"), ("builtins", "str"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise KernelscopeError(f"refusing to unpickle {module}.{name}: only NumPy arrays and plain "
                               "containers are allowed (loading never executes code from a file)")


def safe_unpickle(data: bytes, *, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` allowing only NumPy arrays, lists, dicts, strings and numbers.

    Examples
    --------
    >>> safe_unpickle(pickle.dumps({"a": np.arange(3)}), encoding="ASCII")["a"].tolist()
    [0, 1, 2]
    >>> import os
    >>> class Evil:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo pwned",))
    >>> safe_unpickle(pickle.dumps(Evil()))
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: refusing to unpickle posix.system: ...
    """
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding=encoding).load()
    except KernelscopeError:
        raise
    except Exception as error:  # truncated or corrupt pickles raise many types
        raise KernelscopeError(f"corrupt or truncated pickle ({type(error).__name__}: {error})") from None


def _key(batch: dict, name: str) -> Any:
    for key in (name, name.encode()):
        if key in batch:
            return batch[key]
    raise KernelscopeError(f"CIFAR-10 batch has no {name!r} entry (keys: {sorted(map(str, batch))})")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_unpickle(_read_bytes(path))
    if not isinstance(batch, dict):
        raise KernelscopeError(f"CIFAR-10 batch {str(path)!r} is a {type(batch).__name__}, expected a dict")
    data = np.asarray(_key(batch, "data"))
    labels = np.asarray(_key(batch, "labels"), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise KernelscopeError(f"CIFAR-10 batch {str(path)!r}: data must have shape (N, 3072), got {data.shape}")
    if len(labels) != len(data):
        raise KernelscopeError(f"label/image count mismatch in {str(path)!r}: {len(labels)} labels, "
                               f"{len(data)} images")
    images = (data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return images, labels


def load_cifar10(directory: str | Path) -> tuple[tuple, tuple, list[str]]:
    """Load CIFAR-10 python batches from ``directory`` (``data_batch_*``, ``test_batch``).

    Returns
    -------
    (x_train, y_train), (x_test, y_test), classes
        images ``(N, 3, 32, 32)`` float32 in [0, 1]; class names from ``batches.meta``
        when present.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise KernelscopeError(f"CIFAR-10 directory {str(directory)!r} does not exist")
    train_files = sorted(directory.glob("data_batch_*"))
    test_file = directory / "test_batch"
    if not train_files or not test_file.is_file():
        raise KernelscopeError(f"directory {str(directory)!r} must hold data_batch_* and test_batch "
                               "(the CIFAR-10 python version)")
    parts = [_cifar_batch(p) for p in train_files]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _cifar_batch(test_file)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    classes = [str(k) for k in range(n_classes)]
    meta = directory / "batches.meta"
    if meta.is_file():
        names = _key(safe_unpickle(_read_bytes(meta)), "label_names")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if len(names) >= n_classes:
            classes = names
    return (x_train, y_train), (x_test, y_test), classes


def load_image_folder(directory: str | Path, *, size: tuple[int, int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load a folder of images with one sub-folder per class (sorted names = labels).

    All images become grey when every one is grey, else RGB; they are resized to
    ``size`` (H, W) or, by default, to the most common size.

    Returns
    -------
    x : ndarray of shape (N, C, H, W), float32 in [0, 1]
    y : ndarray of shape (N,), int64
    classes : list of str
    """
    from PIL import Image, UnidentifiedImageError

    from kernelscope.data.images import open_image

    directory = Path(directory)
    if not directory.is_dir():
        raise KernelscopeError(f"image folder {str(directory)!r} does not exist")
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (directory / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise KernelscopeError(f"class folder {str(directory / name)!r} holds no images "
                                   f"({', '.join(IMAGE_SUFFIXES)})")
        files += [(p, label) for p in found]
    if len(classes) < 2:
        raise KernelscopeError(f"image folder {str(directory)!r} must have at least 2 class sub-folders, "
                               f"found {len(classes)}")
    images = []
    for path, _ in files:
        try:
            with open_image(path) as image:  # refused over MAX_IMAGE_PIXELS before decoding
                image.load()
                images.append(image.copy())
        except (UnidentifiedImageError, OSError) as error:
            raise KernelscopeError(f"cannot read image {str(path)!r} ({error})") from None
    grey = all(im.mode in ("L", "1", "I", "I;16", "F") for im in images)
    mode = "L" if grey else "RGB"
    if size is None:
        sizes = [im.size for im in images]  # (W, H)
        w, h = max(set(sizes), key=sizes.count)
    else:
        h, w = size
    arrays = []
    for im in images:
        im = im.convert(mode)
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / 255.0
        arrays.append(a[None] if grey else a.transpose(2, 0, 1))
    x = np.stack(arrays).astype(np.float32)
    y = np.array([label for _, label in files], dtype=np.int64)
    return x, y, classes


def read_image_array(path: str | Path) -> np.ndarray:
    """Images from an ``.npy`` file or an ``.npz`` file (key ``images``, else the first array); no pickles.

    The header is checked before loading (:mod:`kernelscope.ops.npyfiles`: at most
    ``MAX_ARRAY_BYTES``, 1 GiB, numbers only, no lying sizes); float images must be finite.

    Examples
    --------
    >>> read_image_array("/nonexistent.txt")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: images file '/nonexistent.txt' must be .npy or .npz
    """
    from kernelscope.ops.npyfiles import load_npy, load_npz, npz_names

    path = Path(path)
    what = f"images file {str(path)!r}"
    if path.suffix == ".npz":
        files = npz_names(path, what)
        if not files:
            raise KernelscopeError(f"{what} holds no array")
        key = "images" if "images" in files else files[0]
        array = load_npz(path, what, names=[key])[key]
    elif path.suffix == ".npy":
        array = load_npy(path, what)
    else:
        raise KernelscopeError(f"{what} must be .npy or .npz")
    if array.dtype.kind not in "biuf":
        raise KernelscopeError(f"{what} holds {array.dtype} values; images must be numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise KernelscopeError(f"{what} holds NaN or infinite values; images must be finite")
    return array
