"""The run directory: writer functions, the one-writer lock, and the one reader (:class:`Run`).

The layout and manifest are documented in ``docs/run-directory.md``; every file is
written atomically (``kernelscope._io``) and the manifest is the commit point of an
epoch. :func:`writing` holds an OS lock on the directory for as long as a run is
written, cleans up what a killed writer left, and :func:`resume_checkpoint` finds the
last committed epoch. Readers: :func:`load_run` (strict) and :func:`inspect_run`
(lenient: what is missing or unreadable becomes a line in :attr:`Run.problems`, for the
report); both accept the same ``format_version`` values (:data:`SUPPORTED_FORMAT_VERSIONS`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import platform
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope._io import write_bytes, write_json, write_npz
from kernelscope.errors import KernelscopeError

__all__ = [
    "FORMAT", "FORMAT_VERSION", "SUPPORTED_FORMAT_VERSIONS", "Run", "load_run", "inspect_run", "new_manifest",
    "write_manifest", "write_probe", "write_kernels", "write_feature_maps", "write_checkpoint", "read_checkpoint",
    "read_manifest", "prepare_run_dir", "writing", "resume_checkpoint", "discard_uncommitted", "versions",
    "RUN_ENTRIES", "LOCK_NAME",
]

FORMAT = "kernelscope-run"
FORMAT_VERSION = 1                 # what this kernelscope writes
SUPPORTED_FORMAT_VERSIONS = (1,)   # what it reads: the one rule of every reader
#: What a run directory holds (``--force`` removes only these).
RUN_ENTRIES = ("manifest.json", "probe.npz", "kernels", "featuremaps", "checkpoints")
#: The lock file of the one writer (``fcntl.flock``; the kernel releases it when the process dies).
LOCK_NAME = ".lock"


def _wrote(path: Path) -> None:
    """Called after every file a run writes is in place (a seam for the kill-at-every-point tests)."""


def versions() -> dict[str, str]:
    """Versions of Python, NumPy, torch (when importable) and kernelscope."""
    from kernelscope import __version__

    out = {"python": platform.python_version(), "numpy": np.__version__, "kernelscope": __version__}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return out


def new_manifest(*, config: dict[str, Any], model: dict[str, Any], dataset: dict[str, Any],
                 conv_layers: list[str], seed: int) -> dict[str, Any]:
    """A fresh manifest (status "running", no epochs completed)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kernelscope_version": versions()["kernelscope"],
        "status": "running",
        "config": config,
        "model": model,
        "dataset": dataset,
        "seed": int(seed),
        "conv_layers": list(conv_layers),
        "epochs_completed": 0,
        "metrics": [],
        "versions": versions(),
    }


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically."""
    path = write_json(Path(run_dir) / "manifest.json", manifest)
    _wrote(path)
    return path


def write_probe(run_dir: str | Path, images: np.ndarray, raw: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``probe.npz``: images ``(P, C, H, W)`` normalised, raw in [0, 1], labels ``(P,)``."""
    path = write_npz(Path(run_dir) / "probe.npz", images=np.asarray(images, np.float32),
                     raw=np.asarray(raw, np.float32), labels=np.asarray(labels, np.int64))
    _wrote(path)
    return path


def write_kernels(run_dir: str | Path, kernels: dict[str, np.ndarray], *, epoch: int | None = None,
                  step: int | None = None) -> Path:
    """Write one layer -> ``(O, C/groups, kh, kw)`` array per conv layer, for an epoch or a step."""
    if (epoch is None) == (step is None):
        raise ValueError("give exactly one of epoch and step")
    name = f"epoch_{epoch:03d}.npz" if epoch is not None else f"step_{step:06d}.npz"
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in kernels.items()}
    path = write_npz(Path(run_dir) / "kernels" / name, **arrays)
    _wrote(path)
    return path


def write_feature_maps(run_dir: str | Path, epoch: int, maps: dict[str, np.ndarray]) -> Path:
    """Write the probe images' maps ``(P, O, H', W')`` per conv layer for ``epoch``."""
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in maps.items()}
    path = write_npz(Path(run_dir) / "featuremaps" / f"epoch_{epoch:03d}.npz", **arrays)
    _wrote(path)
    return path


def write_checkpoint(run_dir: str | Path, epoch: int, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/epoch_XXX.pt`` and ``checkpoints/last.pt`` (a plain dict, atomically)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = write_bytes(Path(run_dir) / "checkpoints" / f"epoch_{epoch:03d}.pt", data)
    _wrote(path)
    _point_last_at(path)
    return path


def _point_last_at(path: Path) -> None:
    """Make ``last.pt`` beside ``path`` the same file: a hard link swapped in atomically (no second
    write); a copy where the file system has no hard links."""
    last = path.parent / "last.pt"
    tmp = path.parent / f".last.pt.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)
        os.replace(tmp, last)
        tmp.unlink(missing_ok=True)  # rename() does nothing when last.pt already is this file
    except OSError:
        tmp.unlink(missing_ok=True)
        write_bytes(last, path.read_bytes())
    _wrote(last)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with :func:`kernelscope.models.io.read_weights` (never runs code)."""
    from kernelscope.models.io import read_weights

    path = Path(path)
    if not path.is_file():
        raise KernelscopeError(f"checkpoint {str(path)!r} does not exist")
    try:
        return read_weights(path)
    except KernelscopeError as error:
        raise KernelscopeError(f"cannot read checkpoint {str(path)!r}: {error}") from None


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a run directory (the one format rule of every reader).

    Raises :class:`KernelscopeError` when ``run_dir`` is missing or a file, has no readable
    manifest, holds another format, or a ``format_version`` not in
    :data:`SUPPORTED_FORMAT_VERSIONS`.
    """
    run_dir = Path(run_dir)
    path = run_dir / "manifest.json"
    if not run_dir.exists():
        raise KernelscopeError(f"run directory {str(run_dir)!r} does not exist")
    if not run_dir.is_dir():
        raise KernelscopeError(f"run directory {str(run_dir)!r} is a file, not a directory; pass the folder "
                               "written by `kernelscope train --out DIR`")
    if not path.is_file():
        raise KernelscopeError(f"{str(run_dir)!r} is not a run directory: it has no manifest.json "
                               "(write one with `kernelscope train --out DIR`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KernelscopeError(f"corrupt manifest {path} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(manifest, dict):
        raise KernelscopeError(f"corrupt manifest {path} must hold a JSON object (got {type(manifest).__name__})")
    if manifest.get("format") != FORMAT:
        raise KernelscopeError(f"{path} has format {manifest.get('format')!r}; expected {FORMAT!r}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        from kernelscope import __version__

        raise KernelscopeError(f"run {str(run_dir)!r} has format_version {version!r}, which this kernelscope "
                               f"{__version__} cannot read (supported: "
                               f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})")
    return manifest


def prepare_run_dir(run_dir: str | Path, *, force: bool = False, resume: bool = False,
                    write: bool = True) -> dict[str, Any] | None:
    """Check that ``run_dir`` may receive a run; return the existing manifest when resuming.

    - missing or empty: fine (created);
    - holds a run: refused unless ``resume`` (returns its manifest) or ``force`` (its run
      files are removed; other files are left alone);
    - holds other files: refused unless ``force``.

    With ``write=False`` only the checks run (other ranks of a distributed run).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise KernelscopeError(f"output path {str(run_dir)!r} is a file, not a directory")
    has_run = (run_dir / "manifest.json").is_file()
    if resume and force:
        raise KernelscopeError("use either --resume or --force, not both")
    if resume:
        if not has_run:
            raise KernelscopeError(f"nothing to resume: {str(run_dir)!r} holds no run (no manifest.json)")
        return read_manifest(run_dir)
    if has_run and not force:
        try:
            old = read_manifest(run_dir)
            what = f"a run ({old.get('status')}, {old.get('epochs_completed')} epochs)"
        except KernelscopeError:
            what = "a run"
        raise KernelscopeError(f"output directory {str(run_dir)!r} already holds {what}; "
                               "use --resume to continue it or --force to overwrite it")
    if run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir()) and not has_run and not force:
        raise KernelscopeError(f"output directory {str(run_dir)!r} is not empty and holds no run; "
                               "choose another --out or use --force")
    if not write:
        return None
    if force:
        for entry in RUN_ENTRIES:
            target = run_dir / entry
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _held_by(handle: Any) -> str:
    handle.seek(0)
    pid = handle.read().strip()
    return f" (pid {pid})" if pid.isdigit() else ""


def _refuse_if_locked(run_dir: Path) -> None:
    """Raise when another process holds ``run_dir``'s lock (looked at without creating anything)."""
    lock = run_dir / LOCK_NAME
    if not lock.is_file():
        return
    with open(lock, encoding="utf-8", errors="replace") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KernelscopeError(
                f"run directory {str(run_dir)!r} is being written by another kernelscope process"
                f"{_held_by(handle)}; wait for it to finish, or choose another --out") from None
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def writing(run_dir: str | Path, *, force: bool = False, resume: bool = False,
            write: bool = True) -> Iterator[dict[str, Any] | None]:
    """Hold ``run_dir`` as its one writer; yield the existing manifest when resuming, else None.

    Checks as :func:`prepare_run_dir` does, refusing a directory that another process is
    writing (an OS lock, ``fcntl.flock`` on ``RUN/.lock``, held until the block ends; the
    kernel releases it when a process dies, so a crashed run never blocks its resume).
    Under the lock it removes the temporary files (``.*.tmp``) a killed writer left.
    With ``write=False`` (other ranks of a distributed run) only the checks run.
    """
    run_dir = Path(run_dir)
    if not write:
        yield prepare_run_dir(run_dir, force=force, resume=resume, write=False)
        return
    _refuse_if_locked(run_dir)
    prepare_run_dir(run_dir, force=force, resume=resume, write=False)  # refuse before creating anything
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process took it since the look above
            raise KernelscopeError(
                f"run directory {str(run_dir)!r} is being written by another kernelscope process"
                f"{_held_by(handle)}; wait for it to finish, or choose another --out") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        existing = prepare_run_dir(run_dir, force=force, resume=resume)  # again, now that it is ours
        for tmp in [*run_dir.glob(".*.tmp"), *(p for e in RUN_ENTRIES[2:] for p in (run_dir / e).glob(".*.tmp"))]:
            tmp.unlink(missing_ok=True)
        yield existing
    finally:
        handle.close()  # releases the lock


def resume_checkpoint(run_dir: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of the manifest's last committed epoch (``epochs_completed``).

    Not ``last.pt``: a kill between the checkpoint and the manifest leaves ``last.pt`` one
    epoch ahead of the manifest; that epoch is trained again (same seed, same bits).
    """
    run_dir = Path(run_dir)
    epoch = manifest.get("epochs_completed")
    metrics = manifest.get("metrics")
    if (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0 or not isinstance(metrics, list)
            or len(metrics) < epoch):
        raise KernelscopeError(f"cannot resume {str(run_dir)!r}: its manifest is inconsistent "
                               f"(epochs_completed {epoch!r}, {len(metrics) if isinstance(metrics, list) else 'no'} "
                               "metric rows); use --force to start over")
    path = run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt"
    try:
        checkpoint = read_checkpoint(path)
    except KernelscopeError as error:
        raise KernelscopeError(f"cannot resume {str(run_dir)!r} from epoch {epoch}: {error}; "
                               "use --force to start over") from None
    if int(checkpoint.get("epoch", -1)) != epoch:
        raise KernelscopeError(f"cannot resume {str(run_dir)!r}: {path.name} holds epoch {checkpoint.get('epoch')!r}")
    return checkpoint


def discard_uncommitted(run_dir: str | Path, epoch: int, step: int) -> None:
    """Remove what a killed run wrote after its last commit (epochs > ``epoch``, steps > ``step``)
    and point ``last.pt`` at the committed ``epoch_NNN.pt`` again (replacing a damaged one)."""
    run_dir = Path(run_dir)
    for folder, pattern, limit in (("kernels", r"epoch_(\d+)\.npz", epoch), ("featuremaps", r"epoch_(\d+)\.npz", epoch),
                                   ("checkpoints", r"epoch_(\d+)\.pt", epoch), ("kernels", r"step_(\d+)\.npz", step)):
        for path in (run_dir / folder).glob("*"):
            match = re.fullmatch(pattern, path.name)
            if match and int(match.group(1)) > limit:
                path.unlink()
    _point_last_at(run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt")


def _epochs_in(folder: Path, prefix: str = "epoch", suffix: str = ".npz") -> list[int]:
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^{prefix}_(\d+){re.escape(suffix)}$")
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name)))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise KernelscopeError(f"run file {path} is missing") from None
    except Exception as error:  # zip, pickle or format errors from a damaged file
        raise KernelscopeError(f"run file {path} is unreadable ({type(error).__name__}: {error})") from None


class Run:
    """A run directory, read lazily: the one reader of ``docs/run-directory.md``.

    Attributes
    ----------
    path : Path
    manifest : dict
        The parsed ``manifest.json`` (checked by :func:`read_manifest`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._inspected: tuple[list[int], bool, list[str]] | None = None

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, model={(self.manifest.get('model') or {}).get('name')!r}, "
                f"data={(self.manifest.get('dataset') or {}).get('name')!r}, epochs={self.epochs})")

    @property
    def epochs(self) -> list[int]:
        """Recorded epochs (files ``kernels/epoch_*.npz``), sorted; 0 is the initialisation."""
        return _epochs_in(self.path / "kernels")

    @property
    def steps(self) -> list[int]:
        """Optimiser steps with recorded kernels (when recorded every N steps)."""
        return _epochs_in(self.path / "kernels", "step")

    @property
    def status(self) -> str:
        """The manifest's status ("complete", "running", "failed" or "unknown")."""
        return str(self.manifest.get("status", "unknown"))

    @property
    def conv_layers(self) -> list[str]:
        """Conv layer names from the manifest (or from the first kernel file)."""
        layers = self.manifest.get("conv_layers")
        if isinstance(layers, list) and layers:
            return [str(name) for name in layers]
        if self.epochs:
            return list(self.kernels(self.epochs[0]))
        return []

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Per-epoch metrics from the manifest (a list of dicts, possibly empty)."""
        metrics = self.manifest.get("metrics")
        return [m for m in metrics if isinstance(m, dict)] if isinstance(metrics, list) else []

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest.get("config") or {})

    @property
    def classes(self) -> list[str]:
        """Class names of the run's dataset (from the manifest)."""
        classes = (self.manifest.get("dataset") or {}).get("classes") or []
        return [str(c) for c in classes]

    def _epoch(self, epoch: int | None, available: list[int], what: str) -> int:
        if not available:
            raise KernelscopeError(f"run {str(self.path)!r} has no recorded {what}")
        if epoch is None:
            return available[-1]
        if isinstance(epoch, (int, np.integer)) and not isinstance(epoch, bool) and epoch < 0:
            raise KernelscopeError(f"epoch must be 0 or more, got {epoch} (omit it for the last recorded epoch, "
                                   f"{available[-1]})")
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or int(epoch) not in available:
            raise KernelscopeError(f"epoch {epoch!r} not recorded in {str(self.path)!r} "
                                   f"(recorded {what}: {', '.join(map(str, available))})")
        return int(epoch)

    def kernels(self, epoch: int | None = None, layer: str | None = None, *,
                step: int | None = None) -> dict[str, np.ndarray] | np.ndarray:
        """Kernels at ``epoch`` (default: last) or at ``step``: a dict, or one layer's ``(O, C, kh, kw)``."""
        if step is not None:
            if step not in self.steps:
                raise KernelscopeError(f"step {step!r} not recorded in {str(self.path)!r} "
                                       f"(recorded steps: {', '.join(map(str, self.steps)) or 'none'})")
            arrays = _load_npz(self.path / "kernels" / f"step_{step:06d}.npz")
        else:
            epoch = self._epoch(epoch, self.epochs, "kernel epochs")
            arrays = _load_npz(self.path / "kernels" / f"epoch_{epoch:03d}.npz")
        if layer is None:
            return arrays
        if layer not in arrays:
            from kernelscope.errors import suggest

            raise KernelscopeError(suggest(layer, arrays, what="conv layer"))
        return arrays[layer]

    @property
    def feature_map_epochs(self) -> list[int]:
        return _epochs_in(self.path / "featuremaps")

    def feature_maps(self, epoch: int | None = None) -> dict[str, np.ndarray]:
        """The probe images' maps per conv layer at ``epoch`` (default: last): ``(P, O, H', W')``."""
        epoch = self._epoch(epoch, self.feature_map_epochs, "feature-map epochs")
        return _load_npz(self.path / "featuremaps" / f"epoch_{epoch:03d}.npz")

    def probe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(images, raw, labels)``: normalised ``(P, C, H, W)``, raw in [0, 1] (else ``images``), ``(P,)``."""
        path = self.path / "probe.npz"
        if not path.is_file():
            raise KernelscopeError(f"run {str(self.path)!r} has no probe.npz")
        arrays = _load_npz(path)
        images = arrays.get("images")
        if images is None:
            raise KernelscopeError(f"{path} has no 'images' array (has: {', '.join(arrays)})")
        raw = arrays.get("raw", images)
        labels = arrays.get("labels", np.full(len(images), -1, dtype=np.int64))
        return images, raw, labels

    @property
    def checkpoint_epochs(self) -> list[int]:
        return _epochs_in(self.path / "checkpoints", suffix=".pt")

    def checkpoint(self, epoch: int | None = None) -> dict[str, Any]:
        """The checkpoint dict of ``epoch`` (default: newest complete)."""
        epoch = self._epoch(epoch, self.checkpoint_epochs, "checkpoints")
        return read_checkpoint(self.path / "checkpoints" / f"epoch_{epoch:03d}.pt")

    def architecture(self):
        """The run's zoo model as its manifest describes it, freshly initialised (no checkpoint read)."""
        from kernelscope.models.zoo import build_model

        spec = self.manifest["model"]
        kwargs = dict(spec.get("kwargs", {}))
        if isinstance(kwargs.get("input_size"), list):
            kwargs["input_size"] = tuple(kwargs["input_size"])
        return build_model(spec["name"], **kwargs)

    def model(self, epoch: int | None = None):
        """The zoo model with the weights of ``epoch`` (default: newest), in eval mode."""
        model = self.architecture()
        state = self.checkpoint(epoch)["model"]
        model.load_state_dict(state)
        return model.eval()

    def dataset(self):
        """The run's dataset with the same split (and normalisation statistics)."""
        from kernelscope.data import load_dataset

        info = self.manifest["dataset"]
        config = self.manifest.get("config", {})
        return load_dataset(info["name"], seed=int(info.get("split_seed", 0)),
                            test_fraction=float(config.get("test_fraction", 0.2)))

    # -- the lenient view (the report): what is there, what is missing, what is inconsistent

    def inconsistencies(self) -> list[str]:
        """Where the manifest contradicts itself (empty for a consistent one).

        Examples
        --------
        >>> run = Run.__new__(Run)
        >>> run.manifest = {"status": "complete", "epochs_completed": 99, "config": {"epochs": 1},
        ...                 "metrics": [{"epoch": 1}]}
        >>> run.inconsistencies()  # doctest: +NORMALIZE_WHITESPACE
        ['epochs_completed is 99 but the config asks for 1 epochs',
         'epochs_completed is 99 but the metrics list 1 epochs']
        """
        m = self.manifest
        done, planned = m.get("epochs_completed"), (m.get("config") or {}).get("epochs")
        rows = m.get("metrics")
        if isinstance(done, bool) or not isinstance(done, int) or done < 0:
            return [f"epochs_completed is {done!r}, not a count of epochs"]
        out = []
        if isinstance(planned, int) and not isinstance(planned, bool):
            if done > planned:
                out.append(f"epochs_completed is {done} but the config asks for {planned} epochs")
            elif m.get("status") == "complete" and done < planned:
                out.append(f"the status is 'complete' but only {done} of {planned} epochs completed")
        if not isinstance(rows, list) or len(rows) != done:
            out.append(f"epochs_completed is {done} but the metrics list "
                       f"{len(rows) if isinstance(rows, list) else 'no'} epochs")
        return out

    def _inspect(self) -> tuple[list[int], bool, list[str]]:
        if self._inspected is None:
            problems: list[str] = []
            if self.status != "complete":
                problems.append(f"the run's status is {self.status!r}, not 'complete': training did not finish "
                                "(crashed, killed or still running); the report shows what was recorded")
            problems += [f"inconsistent manifest: {line}" for line in self.inconsistencies()]
            files = self.epochs
            readable = []
            for epoch in files:
                try:
                    self.kernels(epoch)
                    readable.append(epoch)
                except KernelscopeError as error:
                    problems.append(str(error))
            if not files:
                problems.append("no kernel snapshots: kernels/epoch_*.npz is missing")
            elif 0 not in files:
                problems.append("no snapshot at initialisation: kernels/epoch_000.npz is missing "
                                "(the epoch-0 control of the atlas is unavailable)")
            declared = self.manifest.get("epochs_completed")
            if isinstance(declared, int) and declared >= 0:
                missing = sorted(set(range(declared + 1)) - set(files))
                if missing and files:
                    shown = ", ".join(f"kernels/epoch_{e:03d}.npz" for e in missing[:5])
                    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                    problems.append(f"manifest says {declared} epochs completed but {shown}{more} "
                                    f"{'is' if len(missing) == 1 else 'are'} missing")
            if not self.feature_map_epochs:
                problems.append("no feature-map snapshots: featuremaps/epoch_*.npz is missing")
            has_probe = False
            if (self.path / "probe.npz").is_file():
                try:
                    self.probe()
                    has_probe = True
                except KernelscopeError as error:
                    problems.append(str(error))
            else:
                problems.append("no probe images: probe.npz is missing")
            if not self.metrics:
                problems.append("no training metrics in manifest.json")
            self._inspected = (readable, has_probe, problems)
        return self._inspected

    @property
    def kernel_epochs(self) -> list[int]:
        """Epochs whose ``kernels/epoch_*.npz`` is readable (checked once, by :func:`inspect_run`)."""
        return list(self._inspect()[0])

    @property
    def has_probe(self) -> bool:
        """Whether ``probe.npz`` is present and readable."""
        return self._inspect()[1]

    @property
    def problems(self) -> list[str]:
        """One line per thing that is missing, unreadable or inconsistent (empty for a healthy, complete run)."""
        return self._inspect()[2]

    def summary_rows(self) -> list[tuple[str, Any]]:
        """(field, value) rows that describe the run, for the report's first table."""
        m = self.manifest
        data = m.get("dataset") or {}
        model = m.get("model") or {}
        versions = m.get("versions") or {}
        return [
            ("run directory", str(self.path)),
            ("status", self.status),
            ("dataset", f"{data.get('name', '?')} ({data.get('n_train', '?')} train / "
                        f"{data.get('n_test', '?')} test, image {data.get('image_shape', '?')})"),
            ("classes", ", ".join(self.classes) or "?"),
            ("model", f"{model.get('name', '?')} {json.dumps(model.get('kwargs', {}), sort_keys=True)}"),
            ("conv layers", ", ".join(self.conv_layers) or "none recorded"),
            ("epochs completed", str(m.get("epochs_completed", "?"))),
            ("seed", str(m.get("seed", "?"))),
            ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "?"),
        ]


def load_run(path: str | Path) -> Run:
    """Open a run directory written by ``kernelscope train``.

    Examples
    --------
    >>> load_run("/nonexistent/run")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: run directory '/nonexistent/run' does not exist
    """
    return Run(path)


def inspect_run(path: str | os.PathLike) -> Run:
    """Open a run directory leniently: its files are checked now and what is missing, unreadable
    or inconsistent becomes a line in :attr:`Run.problems` (the report shows what is there).

    Raises :class:`KernelscopeError` only when ``path`` is not a usable run at all (as
    :func:`load_run`: no manifest, another format, an unsupported ``format_version``).

    Examples
    --------
    >>> import tempfile
    >>> inspect_run(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: '...' is not a run directory: it has no manifest.json ...
    """
    run = Run(path)
    run.problems  # noqa: B018 - read every file now
    return run
