"""What a run directory holds, and what it is missing, for the report.

The report must cover whatever a run holds and say what it does not: a run that
crashed mid-training (status "running", fewer epoch files than expected), a run
written without feature maps, an unreadable file. :func:`inspect_run` reads the
run-directory contract (``docs/run-directory.md``) with NumPy and JSON only, and
raises :class:`~kernelscope.errors.KernelscopeError` only when the directory is
not a usable run at all (no manifest, another format, an incompatible
``format_version``); everything else becomes a line in ``RunInventory.problems``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["RunInventory", "inspect_run", "SUPPORTED_FORMAT_VERSIONS"]

SUPPORTED_FORMAT_VERSIONS = (1,)


@dataclass
class RunInventory:
    """The files of one run directory and the problems found in it.

    Attributes
    ----------
    path : Path
        The run directory.
    manifest : dict
        The parsed ``manifest.json``.
    kernel_epochs, featuremap_epochs : list of int
        Epochs with a readable ``kernels/epoch_*.npz`` / ``featuremaps/epoch_*.npz`` (0 = initialisation).
    checkpoint_epochs : list of int
        Epochs with a ``checkpoints/epoch_*.pt`` file.
    has_probe : bool
        Whether ``probe.npz`` is present and readable.
    problems : list of str
        One line per thing that is missing or unreadable (empty for a complete, healthy run).
    """

    path: Path
    manifest: dict
    kernel_epochs: list[int] = field(default_factory=list)
    featuremap_epochs: list[int] = field(default_factory=list)
    checkpoint_epochs: list[int] = field(default_factory=list)
    has_probe: bool = False
    problems: list[str] = field(default_factory=list)

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
        if self.kernel_epochs:
            return list(self.kernels(self.kernel_epochs[0]))
        return []

    @property
    def metrics(self) -> list[dict]:
        """Per-epoch metrics from the manifest (a list of dicts, possibly empty)."""
        metrics = self.manifest.get("metrics")
        return [m for m in metrics if isinstance(m, dict)] if isinstance(metrics, list) else []

    @property
    def classes(self) -> list[str]:
        """Class names of the run's dataset (from the manifest)."""
        classes = (self.manifest.get("dataset") or {}).get("classes") or []
        return [str(c) for c in classes]

    def kernels(self, epoch: int) -> dict[str, np.ndarray]:
        """All conv layers' kernels at ``epoch``: ``{layer: (O, C/groups, kh, kw)}``."""
        return _load_npz(self.path / "kernels" / f"epoch_{epoch:03d}.npz")

    def feature_maps(self, epoch: int) -> dict[str, np.ndarray]:
        """The probe images' maps at ``epoch``: ``{layer: (P, O, H', W')}``."""
        return _load_npz(self.path / "featuremaps" / f"epoch_{epoch:03d}.npz")

    def probe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(images, raw, labels)`` from ``probe.npz``; ``raw`` falls back to ``images``."""
        arrays = _load_npz(self.path / "probe.npz")
        images = arrays.get("images")
        if images is None:
            raise KernelscopeError(f"{self.path / 'probe.npz'} has no 'images' array (has: {', '.join(arrays)})")
        raw = arrays.get("raw", images)
        labels = arrays.get("labels", np.full(len(images), -1, dtype=np.int64))
        return images, raw, labels

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


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise KernelscopeError(f"run file {path} is missing") from None
    except Exception as error:  # zip, pickle or format errors from a damaged file
        raise KernelscopeError(f"run file {path} is unreadable ({type(error).__name__}: {error})") from None


def _epochs_in(folder: Path, suffix: str = ".npz") -> list[int]:
    if not folder.is_dir():
        return []
    pattern = re.compile(r"^epoch_(\d+)" + re.escape(suffix) + "$")
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name)))


def inspect_run(path: str | os.PathLike) -> RunInventory:
    """Read a run directory's manifest and list its files and problems.

    Parameters
    ----------
    path : str or PathLike
        A run directory written by ``kernelscope train`` (see ``docs/run-directory.md``).

    Returns
    -------
    RunInventory
        The manifest, the recorded epochs and one line per missing or unreadable part.

    Raises
    ------
    KernelscopeError
        When ``path`` does not exist, is not a directory, has no readable
        ``manifest.json``, or holds another format or an incompatible version.

    Examples
    --------
    >>> import tempfile
    >>> inspect_run(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: run directory ... is not a kernelscope run: it has no manifest.json ...
    """
    path = Path(path)
    if not path.exists():
        raise KernelscopeError(f"run directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise KernelscopeError(f"run directory {str(path)!r} is a file, not a directory; pass the folder "
                               "written by `kernelscope train --out DIR`")
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise KernelscopeError(f"run directory {str(path)!r} is not a kernelscope run: it has no manifest.json "
                               "(write one with `kernelscope train --out DIR`)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KernelscopeError(f"{manifest_path} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(manifest, dict):
        raise KernelscopeError(f"{manifest_path} must hold a JSON object (got {type(manifest).__name__})")
    fmt = manifest.get("format")
    if fmt != "kernelscope-run":
        raise KernelscopeError(f"{manifest_path} has format {fmt!r}; expected 'kernelscope-run'")
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise KernelscopeError(
            f"run {str(path)!r} has format_version {version!r}, which this kernelscope "
            f"{_own_version()} cannot read (supported: {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
        )

    inventory = RunInventory(path=path, manifest=manifest)
    problems = inventory.problems
    status = inventory.status
    if status != "complete":
        problems.append(f"the run's status is {status!r}, not 'complete': training did not finish "
                        "(crashed, killed or still running); the report shows what was recorded")

    declared = manifest.get("epochs_completed")
    kernel_files = _epochs_in(path / "kernels")
    readable = []
    for epoch in kernel_files:
        try:
            inventory.kernels(epoch)
            readable.append(epoch)
        except KernelscopeError as error:
            problems.append(str(error))
    inventory.kernel_epochs = readable
    if not kernel_files:
        problems.append("no kernel snapshots: kernels/epoch_*.npz is missing")
    elif 0 not in kernel_files:
        problems.append("no snapshot at initialisation: kernels/epoch_000.npz is missing "
                        "(the epoch-0 control of the atlas is unavailable)")
    if isinstance(declared, int) and declared >= 0:
        missing = sorted(set(range(declared + 1)) - set(kernel_files))
        if missing and kernel_files:
            shown = ", ".join(f"kernels/epoch_{e:03d}.npz" for e in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            problems.append(f"manifest says {declared} epochs completed but {shown}{more} "
                            f"{'is' if len(missing) == 1 else 'are'} missing")

    inventory.featuremap_epochs = _epochs_in(path / "featuremaps")
    if not inventory.featuremap_epochs:
        problems.append("no feature-map snapshots: featuremaps/epoch_*.npz is missing")
    inventory.checkpoint_epochs = _epochs_in(path / "checkpoints", ".pt")

    probe_path = path / "probe.npz"
    if probe_path.is_file():
        try:
            inventory.probe()
            inventory.has_probe = True
        except KernelscopeError as error:
            problems.append(str(error))
    else:
        problems.append("no probe images: probe.npz is missing")
    if not inventory.metrics:
        problems.append("no training metrics in manifest.json")
    return inventory


def _own_version() -> str:
    from kernelscope import __version__

    return __version__
