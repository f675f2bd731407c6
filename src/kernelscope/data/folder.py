"""Large image folders as input: a lazily listed ``torch.utils.data`` data set and a batch loader with workers.

``ImageFolder(root, shape=...)`` lists the image files under ``root`` (recursively, by
extension, sorted by their path relative to ``root``) and keeps only their names, packed
into one ``bytes`` object and an offset array: about 40 bytes a file, so a folder of
100,000 images costs a few MB however large the images are, nothing is decoded until it
is asked for, and worker processes neither copy nor touch a list of 100,000 Python
strings (reference counts on such a list make forked workers copy it page by page).

``ds[i]`` reads one file with :func:`kernelscope.data.images.load_image` (the one image
reader: 8/16 bits, alpha over white, EXIF orientation, size limit), brings it to ``shape``
(C, H, W) with :func:`resize_images` (bilinear, clamped to [0, 1]; grey is repeated on 3
channels, colour becomes BT.709 luminance through :func:`~kernelscope.data.images.to_gray`
for 1 channel) and applies ``prepare``. A file that cannot be read raises
:class:`UnreadableImage`.

:func:`load_batches` loads given global indices through a :class:`torch.utils.data.DataLoader`
(``num_workers=workers``; ``workers=0`` runs in this process) and yields :class:`FolderBatch`
objects in the order of the indices, one per ``batch_size`` indices. Unreadable files are
dropped from their batch and reported in its ``skipped`` list (global index, path, reason),
never a crash.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kernelscope.data.formats import IMAGE_SUFFIXES
from kernelscope.data.images import load_image
from kernelscope.errors import KernelscopeError

__all__ = ["ImageFolder", "UnreadableImage", "FolderBatch", "load_batches", "resize_images"]


class UnreadableImage(KernelscopeError):
    """An image file of a folder that cannot be read (corrupt, truncated, not an image, too large).

    Attributes
    ----------
    path : str
    reason : str
        What was wrong, in a few words (``"is unreadable or truncated (...)"``).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"image file {path!r} {reason}; it is skipped")
        self.path, self.reason = path, reason

    def __reduce__(self) -> tuple[Any, ...]:  # (path, reason), not the message: survives a worker's pickling
        return type(self), (self.path, self.reason)


def resize_images(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(N, c, h, w) in [0, 1] -> (N, C, H, W) float32: bilinear resize (clamped to [0, 1]), grey <-> RGB.

    Grey becomes RGB by repeating it; RGB becomes grey by the mean of its channels (an image
    file read for a 1-channel model is converted by BT.709 luminance before, see :class:`ImageFolder`).

    Examples
    --------
    >>> resize_images(np.ones((2, 1, 4, 4), np.float32), (3, 8, 8)).shape
    (2, 3, 8, 8)
    """
    import torch
    import torch.nn.functional as F

    c, h, w = shape
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))  # (N, c, h, w)
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)  # (N, c, H, W)
    if x.shape[1] == 1 and c == 3:
        x = x.repeat(1, 3, 1, 1)  # (N, 3, H, W)
    elif x.shape[1] == 3 and c == 1:
        x = x.mean(dim=1, keepdim=True)  # (N, 1, H, W)
    elif x.shape[1] != c:
        raise KernelscopeError(f"images have {x.shape[1]} channels but the model takes {c}")
    return x.numpy()


def _list_images(root: Path) -> tuple[bytes, np.ndarray, int, str | None]:
    """Image files under ``root`` as (packed relative names, offsets (n + 1,), other files, one other name).

    Hidden files and folders (names starting with ".") are left out: ``.DS_Store``, macOS's
    ``._photo.jpg`` resource forks, ``.git``.
    """
    names: list[bytes] = []
    others, other_example = 0, None
    for directory, subdirs, files in os.walk(root):  # top-down; symlinked folders are not followed
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        relative = os.path.relpath(directory, root)
        for name in files:
            if name.startswith("."):
                continue
            rel = name if relative == "." else os.path.join(relative, name)
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                names.append(os.fsencode(rel))
            else:
                others += 1
                other_example = other_example or rel
    names.sort()  # byte order of the relative paths: the same listing on every machine and rank
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum([len(n) for n in names], out=offsets[1:])
    return b"".join(names), offsets, others, other_example


class ImageFolder:
    """The image files under a folder as a ``torch.utils.data`` map-style data set, listed, not loaded.

    Parameters
    ----------
    root : str or path
        A folder; image files (``.png .jpg .jpeg .bmp .gif .tif .tiff .webp``, any case) are
        found in it and in its sub-folders, hidden names skipped.
    shape : tuple (C, H, W), (C, None, None) or None
        The size every image is brought to (C is 1 or 3). ``(C, None, None)``: C channels, each
        image at its own size; None: images keep their size and their channels (1 grey, 3
        colour). Images of different sizes or channels cannot share a batch (a clear error).
    prepare : callable or None
        Applied after the resize to a batch of one, ``(1, C, H, W) -> (1, C', H', W')`` in [0, 1]
        (a Source's ``spec.prepare``). With ``workers`` it runs in the worker processes: under a
        ``spawn`` start method it must be picklable (a module-level function).

    Raises
    ------
    KernelscopeError
        ``root`` is not a folder, or holds no image file.

    Notes
    -----
    ``image_shape`` holds ``shape`` (there is no ``shape`` attribute: the data set is not an
    array, and code that takes anything with a ``shape`` for one must not take it). Only the file names are kept (:meth:`path`), never pixel arrays: ``len(pickle.dumps(ds))``
    is about 40 bytes a file. ``ds[i]`` returns ``(C, H, W)`` float32 in [0, 1], or raises
    :class:`UnreadableImage` naming the file.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> Image.new("RGB", (40, 30), (255, 0, 0)).save(f"{root}/red.png")
    >>> _ = Path(root, "notes.txt").write_text("not an image")
    >>> ds = ImageFolder(root, shape=(1, 16, 16))
    >>> len(ds), ds[0].shape, round(float(ds[0].max()), 4)   # red as BT.709 luminance
    (1, (1, 16, 16), 0.2125)
    """

    def __init__(self, root: str | os.PathLike, *, shape: Sequence[int] | None = None,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        path = Path(root)
        if not path.exists():
            raise KernelscopeError(f"image folder {str(root)!r} does not exist; give a folder of image files")
        if not path.is_dir():
            raise KernelscopeError(f"image folder {str(root)!r} is a file, not a folder; give a folder of image files")
        if shape is not None:
            shape = tuple(None if v is None else int(v) for v in shape)
            sizes = [v for v in shape[1:] if v is not None]
            if (len(shape) != 3 or shape[0] not in (1, 3) or len(sizes) == 1 or min(sizes, default=1) < 1):
                raise KernelscopeError(f"shape must be (C, H, W) or (C, None, None) with C 1 or 3 and H, W >= 1 "
                                       f"for image files, got {shape}")
        names, offsets, others, example = _list_images(path)
        if len(offsets) == 1:
            found = f"; it holds {others} other file{'s' if others != 1 else ''}, e.g. {example!r}" if others else ""
            raise KernelscopeError(f"image folder {str(root)!r} holds no image files ({' '.join(IMAGE_SUFFIXES)}, "
                                   f"searched with its sub-folders){found}; give a folder of images")
        self.root = str(path)
        self.image_shape: tuple[int, int | None, int | None] | None = shape  # type: ignore[assignment]
        self.prepare = prepare
        self._names = names  # the relative names, concatenated (bytes)
        self._offsets = offsets  # (n + 1,) int64: name i is _names[_offsets[i]:_offsets[i + 1]]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __repr__(self) -> str:
        return f"ImageFolder({self.root!r}, {len(self)} images, image_shape={self.image_shape})"

    @property
    def paths(self) -> Sequence[str]:
        """All paths as a read-only sequence view (indexing and slicing make the strings on demand)."""
        return _Paths(self)

    def path(self, index: int) -> str:
        """The path of image ``index`` (``root`` joined with its relative name)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"image index {index} out of range for {len(self)} images")
        index %= len(self)
        start, stop = self._offsets[index], self._offsets[index + 1]
        return os.path.join(self.root, os.fsdecode(self._names[start:stop]))

    def __getitem__(self, index: int) -> np.ndarray:
        """Image ``index`` as ``(C, H, W)`` float32 in [0, 1] (see the class docstring)."""
        path = self.path(int(index))
        gray = self.image_shape is not None and self.image_shape[0] == 1
        try:
            image = load_image(path, gray=gray)  # (H, W) or (H, W, 3) float64
        except (KernelscopeError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            prefix = f"image file {path!r} "
            raise UnreadableImage(path, reason[len(prefix):] if reason.startswith(prefix) else reason) from None
        x = (image[None] if image.ndim == 2 else image.transpose(2, 0, 1))[None]  # (1, c, h, w)
        if self.image_shape is not None:
            c, h, w = self.image_shape
            x = resize_images(x, (c, h or x.shape[2], w or x.shape[3]))  # (1, C, H, W)
        if self.prepare is not None:
            x = self.prepare(x)  # (1, C', H', W')
        return np.ascontiguousarray(x[0], dtype=np.float32)  # (C, H, W)


class _Paths(Sequence[str]):
    """The paths of an :class:`ImageFolder`, made when asked for: ``paths[::100]`` is a list of strings."""

    def __init__(self, folder: ImageFolder) -> None:
        self._folder = folder

    def __len__(self) -> int:
        return len(self._folder)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._folder.path(i) for i in range(*index.indices(len(self)))]
        return self._folder.path(index)


def _next(batches: Iterator[Any], *, in_process: bool) -> Any:
    """The next batch of a DataLoader, None at the end. Loading in this process runs torch on one thread, as
    DataLoader workers do: the per-image resize gains nothing from threads, and on busy cores waking them
    costs more than the work (2 threads on 2 shared cores: 35 images/s, 1 thread: 900)."""
    if not in_process:
        return next(batches, None)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return next(batches, None)
    finally:
        torch.set_num_threads(threads)  # the model's forward, between batches, keeps its threads


class FolderBatch(NamedTuple):
    """One batch of :func:`load_batches`.

    Attributes
    ----------
    indices : ndarray of shape (B,), int64
        The global indices of the images that loaded, in the order asked for.
    raw : ndarray of shape (B, C, H, W), float32 in [0, 1]
    inputs : ndarray of shape (B, C, H, W), float32
        ``normalise(raw)``, or ``raw`` itself without ``normalise``.
    skipped : list of (int, str, str)
        (global index, path, reason) of the images of this batch that could not be read.
        ``B`` is ``batch_size`` less these (0 when every image of the batch was unreadable).
    """

    indices: np.ndarray
    raw: np.ndarray
    inputs: np.ndarray
    skipped: list[tuple[int, str, str]]


class _Guarded:
    """``dataset[i]`` as ``(i, tensor, None)``, or ``(i, None, (i, path, reason))`` for an unreadable file."""

    def __init__(self, dataset: ImageFolder) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any, tuple[int, str, str] | None, str | None]:
        import torch

        try:
            return index, torch.from_numpy(self.dataset[index]), None, None
        except UnreadableImage as error:
            return index, None, (index, error.path, error.reason), None
        except KernelscopeError as error:  # not the file's fault (a prepare that fails): one line in the caller
            return index, None, None, str(error).splitlines()[0]


def _collate(items: list[tuple[int, Any, Any, Any]]) -> tuple[Any, Any, list[tuple[int, str, str]], str | None]:
    """Stack the images that loaded (in a worker: the batch travels as one shared-memory tensor)."""
    import torch

    loaded = [(index, x) for index, x, _, _ in items if x is not None]
    skipped = [s for _, _, s, _ in items if s is not None]
    indices = torch.tensor([index for index, _ in loaded], dtype=torch.int64)  # (B,)
    problems = [p for _, _, _, p in items if p is not None]
    if problems:
        return indices, None, skipped, problems[0]
    shapes = sorted({tuple(x.shape) for _, x in loaded})
    if len(shapes) > 1:
        return indices, None, skipped, f"images of one batch have different shapes, {shapes[0]} and {shapes[1]}"
    raw = torch.stack([x for _, x in loaded]) if loaded else None  # (B, C, H, W)
    return indices, raw, skipped, None


def load_batches(dataset: ImageFolder, indices: Any, *, batch_size: int, workers: int = 0,
                 normalise: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[FolderBatch]:
    """Load images ``indices`` of ``dataset`` in batches through a DataLoader with ``workers`` processes.

    Parameters
    ----------
    dataset : ImageFolder
    indices : array_like of int, shape (M,)
        Global indices into ``dataset``, loaded in this order (a rank's share of the folder).
        Empty: nothing is yielded.
    batch_size : int
        Indices per batch: batch ``j`` covers ``indices[j * batch_size:(j + 1) * batch_size]``.
    workers : int
        Worker processes decoding and resizing (0: in this process, no subprocess).
    normalise : callable or None
        ``(B, C, H, W) -> (B, C, H, W)`` for ``inputs`` (a Source's ``normalise``); run here, not
        in the workers.

    Yields
    ------
    FolderBatch
        One per ``batch_size`` indices, in order; unreadable images are left out and listed in
        ``skipped`` (a batch may be shorter, or empty).

    Raises
    ------
    KernelscopeError
        Indices out of range or not 1-D integers, ``batch_size < 1``, ``workers < 0``, or
        images of different sizes without a ``shape`` to resize them to.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for i in range(5):
    ...     Image.new("L", (8 + i, 8), 50 * i).save(f"{root}/{i}.png")
    >>> _ = Path(root, "3.png").write_bytes(b"not a png")        # a corrupt file
    >>> ds = ImageFolder(root, shape=(1, 8, 8))
    >>> for batch in load_batches(ds, [4, 3, 2, 1, 0], batch_size=2):
    ...     print(batch.indices, batch.raw.shape, [(i, Path(p).name) for i, p, _ in batch.skipped])
    [4] (1, 1, 8, 8) [(3, '3.png')]
    [2 1] (2, 1, 8, 8) []
    [0] (1, 1, 8, 8) []
    """
    from torch.utils.data import DataLoader

    order = np.asarray(indices)
    if order.ndim != 1 or (order.size and not np.issubdtype(order.dtype, np.integer)):
        raise KernelscopeError(f"indices must be a 1-D array of integers, got shape {order.shape} "
                               f"dtype {order.dtype}")
    order = order.astype(np.int64)
    if order.size and (order.min() < 0 or order.max() >= len(dataset)):
        raise KernelscopeError(f"indices must lie in [0, {len(dataset)}) for {len(dataset)} images, got "
                               f"[{int(order.min())}, {int(order.max())}]")
    if int(batch_size) < 1:
        raise KernelscopeError(f"batch_size must be >= 1, got {batch_size}")
    if int(workers) < 0:
        raise KernelscopeError(f"workers must be >= 0 (0: load in this process), got {workers}")
    if order.size == 0:
        return
    step = int(batch_size)
    chunks = [order[s:s + step].tolist() for s in range(0, order.size, step)]
    loader = DataLoader(_Guarded(dataset), batch_sampler=chunks, num_workers=int(workers), collate_fn=_collate)
    sample = tuple(v or 0 for v in dataset.image_shape or (0, 0, 0))  # an empty batch's: the last seen, else this
    batches = iter(loader)
    try:
        while (item := _next(batches, in_process=int(workers) == 0)) is not None:
            got, raw, skipped, problem = item
            if problem is not None and problem.startswith("images of one batch"):
                raise KernelscopeError(f"{problem}, in image folder {dataset.root!r}; give a shape (C, H, W) to "
                                       "resize them to (a Source's image_folder uses the model's input size)")
            if problem is not None:
                raise KernelscopeError(problem)
            if raw is None:
                raw_np = np.zeros((0, *sample), dtype=np.float32)  # (0, C, H, W)
            else:
                raw_np = raw.numpy()  # (B, C, H, W)
                sample = raw_np.shape[1:]
            inputs = raw_np if normalise is None else np.asarray(normalise(raw_np), dtype=np.float32)
            yield FolderBatch(got.numpy(), raw_np, inputs, list(skipped))
    finally:
        del batches  # a multi-process iterator stops its workers when it goes
