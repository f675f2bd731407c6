"""The run directory: writer functions and the reader (:func:`load_run`, :class:`Run`).

The layout and manifest are documented in ``docs/run-directory.md``; every file is
written atomically (``kernelscope._io``). The writer functions are public so that
other training back ends (the NumPy engine's ``npnet``) write exactly the same format.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope._io import write_bytes, write_json, write_npz
from kernelscope.errors import KernelscopeError

__all__ = [
    "FORMAT", "FORMAT_VERSION", "Run", "load_run", "new_manifest", "write_manifest", "write_probe",
    "write_kernels", "write_feature_maps", "write_checkpoint", "read_checkpoint", "read_manifest",
    "prepare_run_dir", "versions", "RUN_ENTRIES",
]

FORMAT = "kernelscope-run"
FORMAT_VERSION = 1
#: What a run directory holds (``--force`` removes only these).
RUN_ENTRIES = ("manifest.json", "probe.npz", "kernels", "featuremaps", "checkpoints")


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
    return write_json(Path(run_dir) / "manifest.json", manifest)


def write_probe(run_dir: str | Path, images: np.ndarray, raw: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``probe.npz``: images ``(P, C, H, W)`` normalised, raw in [0, 1], labels ``(P,)``."""
    return write_npz(Path(run_dir) / "probe.npz", images=np.asarray(images, np.float32),
                     raw=np.asarray(raw, np.float32), labels=np.asarray(labels, np.int64))


def write_kernels(run_dir: str | Path, kernels: dict[str, np.ndarray], *, epoch: int | None = None,
                  step: int | None = None) -> Path:
    """Write one layer -> ``(O, C/groups, kh, kw)`` array per conv layer, for an epoch or a step."""
    if (epoch is None) == (step is None):
        raise ValueError("give exactly one of epoch and step")
    name = f"epoch_{epoch:03d}.npz" if epoch is not None else f"step_{step:06d}.npz"
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in kernels.items()}
    return write_npz(Path(run_dir) / "kernels" / name, **arrays)


def write_feature_maps(run_dir: str | Path, epoch: int, maps: dict[str, np.ndarray]) -> Path:
    """Write the probe images' maps ``(P, O, H', W')`` per conv layer for ``epoch``."""
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in maps.items()}
    return write_npz(Path(run_dir) / "featuremaps" / f"epoch_{epoch:03d}.npz", **arrays)


def write_checkpoint(run_dir: str | Path, epoch: int, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/epoch_XXX.pt`` and ``checkpoints/last.pt`` (a plain dict, atomically)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = write_bytes(Path(run_dir) / "checkpoints" / f"epoch_{epoch:03d}.pt", data)
    # last.pt: a hard link to the complete file, swapped in atomically (no second write); copy where
    # the file system has no hard links.
    last = path.parent / "last.pt"
    tmp = path.parent / f".last.pt.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)
        os.replace(tmp, last)
    except OSError:
        tmp.unlink(missing_ok=True)
        write_bytes(last, data)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)`` (never runs code)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise KernelscopeError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise KernelscopeError(f"cannot read checkpoint {str(path)!r}: {str(error).splitlines()[0]}") from None


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a run directory."""
    run_dir = Path(run_dir)
    path = run_dir / "manifest.json"
    if not run_dir.is_dir():
        raise KernelscopeError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise KernelscopeError(f"{str(run_dir)!r} is not a run directory (no manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise KernelscopeError(f"corrupt manifest {str(path)!r}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KernelscopeError(f"{str(path)!r} is not a kernelscope run manifest (format != {FORMAT!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise KernelscopeError(f"run {str(run_dir)!r} has format_version {manifest['format_version']}; "
                               f"this kernelscope reads up to {FORMAT_VERSION}")
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
    if run_dir.is_dir() and any(run_dir.iterdir()) and not has_run and not force:
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


class Run:
    """A run directory, read lazily.

    Attributes
    ----------
    path : Path
    manifest : dict
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, model={self.manifest['model']['name']!r}, "
                f"data={self.manifest['dataset']['name']!r}, epochs={self.epochs})")

    @property
    def epochs(self) -> list[int]:
        """Recorded epochs, sorted; 0 is the initialisation."""
        return sorted(int(p.stem.split("_")[1]) for p in (self.path / "kernels").glob("epoch_*.npz"))

    @property
    def steps(self) -> list[int]:
        """Optimiser steps with recorded kernels (when recorded every N steps)."""
        return sorted(int(p.stem.split("_")[1]) for p in (self.path / "kernels").glob("step_*.npz"))

    @property
    def conv_layers(self) -> list[str]:
        return list(self.manifest["conv_layers"])

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("metrics", []))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest["config"])

    def _epoch(self, epoch: int | None, available: list[int], what: str) -> int:
        if not available:
            raise KernelscopeError(f"run {str(self.path)!r} has no recorded {what}")
        if epoch is None or epoch == -1:
            return available[-1]
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or int(epoch) not in available:
            raise KernelscopeError(f"epoch {epoch!r} not recorded in {str(self.path)!r} "
                                   f"(recorded {what}: {', '.join(map(str, available))})")
        return int(epoch)

    def _load_npz(self, path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as error:
            raise KernelscopeError(f"corrupt array file {str(path)!r}: {error}") from None

    def kernels(self, epoch: int | None = None, layer: str | None = None, *,
                step: int | None = None) -> dict[str, np.ndarray] | np.ndarray:
        """Kernels at ``epoch`` (default: last) or at ``step``: a dict, or one layer's ``(O, C, kh, kw)``."""
        if step is not None:
            if step not in self.steps:
                raise KernelscopeError(f"step {step!r} not recorded in {str(self.path)!r} "
                                       f"(recorded steps: {', '.join(map(str, self.steps)) or 'none'})")
            arrays = self._load_npz(self.path / "kernels" / f"step_{step:06d}.npz")
        else:
            epoch = self._epoch(epoch, self.epochs, "kernel epochs")
            arrays = self._load_npz(self.path / "kernels" / f"epoch_{epoch:03d}.npz")
        if layer is None:
            return arrays
        if layer not in arrays:
            from kernelscope.errors import suggest

            raise KernelscopeError(suggest(layer, arrays, what="conv layer"))
        return arrays[layer]

    @property
    def feature_map_epochs(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in (self.path / "featuremaps").glob("epoch_*.npz"))

    def feature_maps(self, epoch: int | None = None) -> dict[str, np.ndarray]:
        """The probe images' maps per conv layer at ``epoch`` (default: last): ``(P, O, H', W')``."""
        epoch = self._epoch(epoch, self.feature_map_epochs, "feature-map epochs")
        return self._load_npz(self.path / "featuremaps" / f"epoch_{epoch:03d}.npz")

    def probe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(images, raw, labels)``: normalised ``(P, C, H, W)``, raw in [0, 1], ``(P,)`` int64."""
        path = self.path / "probe.npz"
        if not path.is_file():
            raise KernelscopeError(f"run {str(self.path)!r} has no probe.npz")
        arrays = self._load_npz(path)
        return arrays["images"], arrays["raw"], arrays["labels"]

    @property
    def checkpoint_epochs(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in (self.path / "checkpoints").glob("epoch_*.pt"))

    def checkpoint(self, epoch: int | None = None) -> dict[str, Any]:
        """The checkpoint dict of ``epoch`` (default: newest complete)."""
        epoch = self._epoch(epoch, self.checkpoint_epochs, "checkpoints")
        return read_checkpoint(self.path / "checkpoints" / f"epoch_{epoch:03d}.pt")

    def model(self, epoch: int | None = None):
        """The zoo model with the weights of ``epoch`` (default: newest), in eval mode."""
        from kernelscope.models.zoo import build_model

        spec = self.manifest["model"]
        kwargs = dict(spec.get("kwargs", {}))
        if isinstance(kwargs.get("input_size"), list):
            kwargs["input_size"] = tuple(kwargs["input_size"])
        model = build_model(spec["name"], **kwargs)
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
