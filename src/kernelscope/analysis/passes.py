"""One way for a data-set pass to run: sharded over ``torchrun`` ranks, merged exactly, resumable.

A data-set pass (top patches, dissection, shift, ...) is written as a **reducer**: an object
with ``update(batch)`` that folds a :class:`Batch` into a small summary, ``state()`` /
``load(state)`` that turn the summary into plain data and back (for checkpoints and for the
merge), and ``merge(states)`` that replaces its summary by the merge of several (one per
rank, in rank order). :func:`run_pass` does the rest:

1. **Shard.** Rank ``r`` of ``W`` (``kernelscope.train.distributed.setup``: ``RANK`` and
   ``WORLD_SIZE`` from ``torchrun``) takes the contiguous block of global indices
   ``[N r / W, N (r + 1) / W)`` (:func:`shard`), in order: every index of the data set is
   read by exactly one rank, and a reducer sees global indices, so a tie broken "by the
   earlier image" is broken the same way as in one process.
2. **Batches.** Arrays in memory are cut into batches; an image folder
   (``kernelscope.data.folder.ImageFolder``) is read through ``load_batches`` (workers,
   decode, resize, normalise), which skips unreadable files and says which.
3. **Checkpoints.** With a :class:`Checkpoint`, every ``every`` batches each rank writes its
   reducers' states, its position and the skipped files atomically (:mod:`kernelscope._io`)
   to ``<folder>/<pass>.rank<r>of<W>.npz``, with a fingerprint of what is computed; with
   ``resume`` a rank loads its file and continues after the position it holds. A file with
   another fingerprint is a one-line error.
4. **Merge.** At the end every rank's states are gathered to every rank
   (``torch.distributed.all_gather_object``: the small summaries, never activations) and
   each reducer merges them, so every rank (and rank 0, which writes) holds the result of
   one process over the whole data set. Skipped files are gathered too. State entries that a
   reducer lists in an optional ``summed`` attribute (large count arrays) are added with
   ``all_reduce`` first: the first rank holding one carries the total, the others drop it.

Examples
--------
>>> class Total:                          # the smallest reducer: a sum over the images
...     def __init__(self): self.sum = 0.0
...     def update(self, batch): self.sum += float(batch.inputs.sum())
...     def state(self): return {"sum": self.sum}
...     def load(self, state): self.sum = state["sum"]
...     def merge(self, states): self.sum = sum(s["sum"] for s in states)
>>> total = Total()
>>> report = run_pass({"total": total}, np.ones((10, 1, 2, 2), dtype=np.float32), batch_size=4)
>>> total.sum, report.n_used, report.world_size
(40.0, 10, 1)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kernelscope._io import atomic_write, dumps_json
from kernelscope._progress import progress
from kernelscope.analysis.hooks import _as_nchw
from kernelscope.errors import KernelscopeError
from kernelscope.train.distributed import Context

__all__ = ["Batch", "Reducer", "Images", "Checkpoint", "PassReport", "run_pass", "shard", "gather_states",
           "as_images", "KILL_AFTER_ENV"]

#: Tests only: a process exits abruptly (``os._exit(75)``, like a kill) right after writing its
#: checkpoint number N (counted over the process's passes), so that ``--resume`` can be tested.
KILL_AFTER_ENV = "KERNELSCOPE_TEST_KILL_AFTER_CHECKPOINT"
_CHECKPOINT_VERSION = 1


@dataclass
class Batch:
    """A batch of a pass: global ``indices`` (B,) int64, model ``inputs`` and ``raw`` (display) images
    (B, C, H, W) float32."""

    indices: np.ndarray
    inputs: np.ndarray
    raw: np.ndarray


class Reducer(Protocol):
    """What :func:`run_pass` needs of a pass (see the module docstring)."""

    def update(self, batch: Batch) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...

    def merge(self, states: list[dict[str, Any]]) -> None: ...


def shard(n: int, rank: int, world_size: int) -> np.ndarray:
    """The global indices rank ``rank`` of ``world_size`` reads: a contiguous block, in order.

    Examples
    --------
    >>> [shard(10, r, 3).tolist() for r in range(3)]
    [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    """
    return np.arange(n * rank // world_size, n * (rank + 1) // world_size, dtype=np.int64)


class Images:
    """The images of a pass: arrays in memory, an image folder, or (one process only) a stream of batches.

    Parameters
    ----------
    inputs : ndarray (N, C, H, W), optional
        Model inputs, normalised.
    raw : ndarray (N, C, H, W), optional
        The same images for display (default: ``inputs``).
    folder : torch Dataset, optional
        A ``kernelscope.data.folder.ImageFolder`` (read by ``load_batches`` with ``normalise``).
    stream : iterable, optional
        Batches (arrays, or ``(inputs, raw)`` pairs), consumed in order; cannot be sharded.
    normalise : callable, optional
        raw -> inputs for a folder (``Source.normalise``).
    """

    def __init__(self, inputs: Any = None, raw: Any = None, *, folder: Any = None, stream: Any = None,
                 normalise: Any = None, description: str = ""):
        self.inputs = None if inputs is None else _as_nchw(inputs)
        self.raw = self.inputs if raw is None or inputs is None else _as_nchw(raw)
        self.folder, self.stream, self.normalise, self.description = folder, stream, normalise, description
        if self.inputs is not None and self.raw is not None and (
                self.raw.shape[0] != self.inputs.shape[0] or self.raw.shape[2:] != self.inputs.shape[2:]):
            raise KernelscopeError(f"display images must match the inputs in number and size: got "
                                   f"{self.raw.shape} for inputs {self.inputs.shape}")

    @property
    def shardable(self) -> bool:
        return self.stream is None

    def __len__(self) -> int:
        if self.inputs is not None:
            return self.inputs.shape[0]
        if self.folder is not None:
            return len(self.folder)
        if isinstance(self.stream, (list, tuple)) and all(hasattr(b, "shape") for b in self.stream):
            return sum(len(b) for b in self.stream)
        raise KernelscopeError("a stream of batches has no length known in advance; give an array or a folder")

    def batches(self, indices: np.ndarray, batch_size: int, workers: int = 0,
                skip_batches: int = 0) -> Iterator[tuple[Batch, list[tuple[int, str, str]]]]:
        """``(batch, skipped)`` for ``indices`` (in order), ``batch_size`` at a time, after ``skip_batches``."""
        if batch_size < 1:
            raise KernelscopeError(f"batch_size must be >= 1, got {batch_size}")
        if self.stream is not None:
            seen = 0
            for number, item in enumerate(self.stream):
                x, shown = (item[0], item[1]) if isinstance(item, tuple) else (item, item)
                x, shown = _as_nchw(x), _as_nchw(shown)
                index = np.arange(seen, seen + x.shape[0], dtype=np.int64)
                seen += x.shape[0]
                if number >= skip_batches and x.shape[0]:
                    yield Batch(index, np.ascontiguousarray(x, dtype=np.float32),
                                np.asarray(shown, dtype=np.float32)), []
            return
        if self.folder is not None:
            from kernelscope.data.folder import load_batches

            rest = indices[skip_batches * batch_size:]
            for found in load_batches(self.folder, rest, batch_size=batch_size, workers=workers,
                                      normalise=self.normalise):
                skipped = [(int(i), str(p), str(r)) for i, p, r in found.skipped]
                inputs = np.asarray(found.inputs, dtype=np.float32)
                yield Batch(np.asarray(found.indices, dtype=np.int64), inputs,
                            np.asarray(found.raw, dtype=np.float32)), skipped
            return
        for start in range(skip_batches * batch_size, len(indices), batch_size):
            index = indices[start:start + batch_size]
            lo, hi = int(index[0]), int(index[-1]) + 1  # contiguous (a shard): a slice, no copy of the set
            yield Batch(index, np.ascontiguousarray(self.inputs[lo:hi], dtype=np.float32),
                        np.asarray(self.raw[lo:hi], dtype=np.float32)), []

    def first(self, batch_size: int, workers: int = 0) -> Batch:
        """The first batch of the whole data set (every rank can compute it: reducers whose bins are
        set by it agree across ranks)."""
        for batch, _ in self.batches(np.arange(min(batch_size, len(self)), dtype=np.int64), batch_size, workers):
            return batch
        raise KernelscopeError("the dataset has no images (0 given); give at least one image")

    def fingerprint(self) -> str:
        """A short hash of the images: their number and shape, and a sample of their bytes (arrays), or the
        folder's file list."""
        digest = hashlib.sha256()
        if self.inputs is not None:
            digest.update(repr(self.inputs.shape).encode())
            step = max(1, self.inputs.shape[0] // 16)
            digest.update(np.ascontiguousarray(self.inputs[::step], dtype=np.float32).tobytes())
        elif self.folder is not None:
            digest.update(str(len(self.folder)).encode())
            for path in getattr(self.folder, "paths", [])[:: max(1, len(self.folder) // 256)]:
                digest.update(str(path).encode())
        else:
            digest.update(b"stream")
        return digest.hexdigest()[:16]


def as_images(images: Any, display: Any = None) -> Images:
    """:class:`Images` from what the analyses accept: an array, an :class:`Images`, an image folder
    dataset, or an iterable of batches."""
    if isinstance(images, Images):
        return images
    if hasattr(images, "shape") and hasattr(images, "__getitem__"):
        return Images(images, display)
    if display is not None:
        raise KernelscopeError("display must be given inside the stream as (inputs, display) pairs")
    if hasattr(images, "__getitem__") and hasattr(images, "__len__") and hasattr(images, "root"):
        return Images(folder=images)
    if not hasattr(images, "__iter__"):
        raise KernelscopeError(
            f"images must be an array (N, C, H, W) or an iterable of batches, got {type(images).__name__}")
    return Images(stream=images)


@dataclass
class Checkpoint:
    """Where and how often a pass saves its state, and what it must match to be resumed.

    ``every``: batches between saves (0: never save); ``resume``: continue from the saved state;
    ``fingerprint``: what is computed (source, layer, options, images): a saved state with another
    fingerprint is refused.
    """

    folder: Path
    every: int = 0
    resume: bool = False
    fingerprint: dict[str, Any] = field(default_factory=dict)
    written: int = 0  # checkpoints written by this process (for the tests' kill switch)

    def path(self, name: str, context: Context) -> Path:
        return Path(self.folder) / f"{name}.rank{context.rank}of{context.world_size}.npz"

    def digest(self, name: str, context: Context, extra: str) -> str:
        text = dumps_json({"pass": name, "world_size": context.world_size, "images": extra, **self.fingerprint},
                          indent=None)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def clear(self) -> None:
        """Remove this folder's checkpoint files (after the results are written)."""
        folder = Path(self.folder)
        for path in folder.glob("*.rank*of*.npz"):
            path.unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@dataclass
class PassReport:
    """What a pass read: images in the set, images used (over all ranks), files skipped, ranks."""

    n_images: int
    n_used: int
    skipped: list[dict[str, Any]]
    world_size: int
    resumed_batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "n_used": self.n_used, "n_skipped": len(self.skipped),
                "skipped": self.skipped[:100], "processes": self.world_size}


def gather_states(context: Context, state: Any) -> list[Any]:
    """Every rank's ``state`` in rank order, on every rank (``[state]`` in one process).

    Over NCCL, ``all_gather_object`` moves the pickled objects through the current CUDA device,
    which :func:`kernelscope.train.distributed.setup` sets per rank.
    """
    if not context.distributed:
        return [state]
    import torch.distributed as dist

    out: list[Any] = [None] * context.world_size
    dist.all_gather_object(out, state)
    return out


def run_pass(reducers: dict[str, Reducer], images: Any, *, context: Context | None = None, batch_size: int = 64,
             workers: int = 0, checkpoint: Checkpoint | None = None, name: str = "pass", desc: str = "",
             display: Any = None, progress_every: int = 100, total: int | None = None) -> PassReport:
    """Feed this rank's share of ``images`` to every reducer, then merge the reducers over all ranks.

    Parameters
    ----------
    reducers : dict of str to reducer
        Each gets every batch (one read of the images for several summaries, e.g. a network and
        its initialisation control).
    images : ndarray (N, C, H, W), :class:`Images`, image folder dataset, or iterable of batches
    context : Context, optional
        Rank and world size, from :func:`kernelscope.train.distributed.setup` (default: one
        process, even under ``torchrun``: sharding is asked for, never implied).
    checkpoint : Checkpoint, optional
        Save every ``checkpoint.every`` batches; resume when ``checkpoint.resume``.
    name : str
        The pass's name in checkpoint files (one command may run several passes).
    total : int, optional
        The length of a stream of batches, for the progress line (arrays and folders know theirs).
    progress_every : int
        When stderr is a log (not a terminal), a progress line every this many batches
        (:mod:`kernelscope._progress`), with the rank under ``torchrun``.

    Returns
    -------
    PassReport
        After it the reducers hold the merged summaries of all ranks.
    """
    source = as_images(images, display)
    context = context if context is not None else Context()
    if context.distributed and not source.shardable:
        raise KernelscopeError("a stream of batches cannot be split over processes; give an array or an image "
                               "folder, or run one process")
    n = len(source) if source.shardable else None
    indices = shard(n, context.rank, context.world_size) if n is not None else np.zeros(0, dtype=np.int64)
    skipped: list[tuple[int, str, str]] = []
    position = used = 0
    path = digest = None
    if checkpoint is not None:
        path = checkpoint.path(name, context)
        digest = checkpoint.digest(name, context, source.fingerprint())
        if checkpoint.resume and path.is_file():
            position, used, skipped = _load_checkpoint(path, digest, reducers)
        elif checkpoint.resume:
            others = sorted(p.name for p in Path(checkpoint.folder).glob(f"{name}.rank*of*.npz"))
            if others:
                raise KernelscopeError(
                    f"checkpoint {others[0]} in {checkpoint.folder} was written by another number of processes "
                    f"than {context.world_size}; resume with the same number (the shards depend on it)")
    resumed = position
    total = len(indices) if n is not None else total
    label = desc or name
    if context.distributed:
        label += f" [rank {context.rank}/{context.world_size}]"
    bar = progress(desc=label, total=total, unit="img", every=progress_every * batch_size)
    try:
        bar.update(min(position * batch_size, total or 0))
        for batch, dropped in source.batches(indices, batch_size, workers, skip_batches=position):
            skipped.extend(dropped)
            if len(batch.indices):
                for reducer in reducers.values():
                    reducer.update(batch)
            used += len(batch.indices)
            position += 1
            bar.update(len(batch.indices) + len(dropped))
            if checkpoint is not None and checkpoint.every and position % checkpoint.every == 0:
                _save_checkpoint(path, digest, reducers, position, used, skipped)
                checkpoint.written += 1
                if os.environ.get(KILL_AFTER_ENV) == str(checkpoint.written):
                    os._exit(75)  # tests: die as a kill would, right after a checkpoint
    finally:
        bar.close()
    if checkpoint is not None and checkpoint.every:
        _save_checkpoint(path, digest, reducers, position, used, skipped)  # the whole shard: a resume merges at once
    states = {key: r.state() for key, r in reducers.items()}
    _sum_in_place(context, reducers, states)
    gathered = gather_states(context, {"states": states, "used": used, "skipped": skipped})
    for key, reducer in reducers.items():
        reducer.merge([g["states"][key] for g in gathered])
    all_skipped = sorted((s for g in gathered for s in g["skipped"]), key=lambda s: s[0])
    n_used = sum(g["used"] for g in gathered)
    if n_used == 0:
        raise KernelscopeError("the dataset has no images (0 given); give at least one image")
    return PassReport(n if n is not None else n_used, n_used,
                      [{"index": i, "path": p, "reason": r} for i, p, r in all_skipped],
                      context.world_size, resumed)


def _sum_in_place(context: Context, reducers: dict[str, Reducer], states: dict[str, dict[str, Any]]) -> None:
    """Add up, with ``all_reduce``, the state entries a reducer lists in ``summed`` (large count arrays):
    the first rank that holds an entry then carries the total and the others drop it, so the gather
    moves one copy instead of one per rank, and the reducer's merge (a sum over the states that hold
    the entry) gives the same total."""
    wanted = [(key, entry) for key, r in reducers.items() for entry in getattr(r, "summed", ())]
    if not context.distributed or not wanted:
        return
    import torch
    import torch.distributed as dist

    held = gather_states(context, {f"{k}/{e}": (np.shape(states[k][e]), np.asarray(states[k][e]).dtype.str)
                                   for k, e in wanted if e in states[k]})
    for key, entry in wanted:
        name = f"{key}/{entry}"
        owners = [rank for rank, h in enumerate(held) if name in h]
        if not owners:
            continue
        shape, dtype = held[owners[0]][name]
        local = states[key].get(entry)
        values = np.zeros(shape, dtype=np.dtype(dtype)) if local is None else np.asarray(local)
        tensor = torch.from_numpy(np.array(values, copy=True)).to(context.device)  # (the state stays as it was)
        dist.all_reduce(tensor)  # integers stay integers: the sum is exact
        if context.rank == owners[0]:
            states[key][entry] = tensor.cpu().numpy()
        else:
            states[key].pop(entry, None)


# ---------------------------------------------------------------------------- checkpoint files

def _pack(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` as JSON-able data, its arrays moved to ``arrays`` (referenced by key)."""
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _pack(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def _unpack(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
        return {k: _unpack(v, arrays) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj


def _save_checkpoint(path: Path, digest: str, reducers: dict[str, Reducer], position: int, used: int,
                     skipped: list) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta = {"version": _CHECKPOINT_VERSION, "fingerprint": digest, "position": position, "used": used,
            "skipped": [list(s) for s in skipped],
            "states": _pack({key: r.state() for key, r in reducers.items()}, arrays)}
    text = np.array(json.dumps(meta))

    def write(handle):
        np.savez(handle, __meta__=text, **arrays)

    atomic_write(path, write)


def _load_checkpoint(path: Path, digest: str, reducers: dict[str, Reducer]) -> tuple[int, int, list]:
    with np.load(path, allow_pickle=False) as data:  # data only: a checkpoint never runs code
        meta = json.loads(str(data["__meta__"]))
        if meta.get("version") != _CHECKPOINT_VERSION or meta.get("fingerprint") != digest:
            raise KernelscopeError(
                f"checkpoint {path} was written for another pass (other source, layer, images, options or "
                "number of processes); run without --resume, or remove it")
        arrays = {key: data[key] for key in data.files if key != "__meta__"}
    states = _unpack(meta["states"], arrays)
    for key, reducer in reducers.items():
        reducer.load(states[key])
    return int(meta["position"]), int(meta["used"]), [tuple(s) for s in meta["skipped"]]
