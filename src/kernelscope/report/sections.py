"""Report sections that show the other analyses: atlas, top patches, receptive fields,
dissection, distribution shift and part detectors.

Each ``<name>_section(inv, result, *, level, prefix)`` takes the run's
:class:`~kernelscope.report.inventory.RunInventory` and, optionally, a
precomputed result of that analysis; without one it computes the analysis from the
run when the run makes that possible, and raises
:class:`~kernelscope.errors.KernelscopeError` (shown as a one-line note) when not.
The analyses themselves live in ``kernelscope.analysis``; an ``ImportError`` here
means the capability is not installed, and the report says so.
"""

from __future__ import annotations

from typing import Any

from kernelscope.errors import KernelscopeError
from kernelscope.report import html as H
from kernelscope.report.inventory import RunInventory

__all__ = ["atlas_section", "patches_section", "receptive_section", "dissect_section", "shift_section",
           "parts_section"]


def _run_model(inv: RunInventory):
    """The run's model at its last checkpoint (eval mode), through the TRAINING API."""
    if not inv.checkpoint_epochs and not (inv.path / "checkpoints" / "last.pt").is_file():
        raise KernelscopeError("no checkpoint in this run (checkpoints/*.pt is missing): the model-based "
                               "analyses need the trained weights")
    from kernelscope.train.rundir import load_run

    return load_run(inv.path).model()


def atlas_section(inv: RunInventory, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Each first-layer kernel beside its best classical match; class fractions against the controls."""
    from kernelscope.analysis.atlas import atlas_of

    if result is None:
        result = atlas_of(inv.path)
    raise KernelscopeError("the atlas section is not wired yet")  # replaced when the atlas API lands


def patches_section(inv: RunInventory, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Top-k dataset patches per channel."""
    from kernelscope.analysis.toppatches import top_patches  # noqa: F401

    raise KernelscopeError("the top-patches section is not wired yet")


def receptive_section(inv: RunInventory, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Theoretical and effective receptive fields per layer."""
    from kernelscope.analysis import receptive  # noqa: F401

    raise KernelscopeError("the receptive-field section is not wired yet")


def dissect_section(inv: RunInventory, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Network Dissection IoU of every channel with the eye and mouth masks, against chance."""
    from kernelscope.analysis import dissect  # noqa: F401

    raise KernelscopeError("the dissection section is not wired yet")


def shift_section(inv: RunInventory, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Channels that go quiet (or fire more) out of distribution; AUROC per channel and network-level."""
    from kernelscope.analysis import shift  # noqa: F401

    raise KernelscopeError("the distribution-shift section is not wired yet")


def parts_section(inv: RunInventory, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Occlusion part selectivity: part drop against equal-area control occlusions."""
    from kernelscope.analysis import parts  # noqa: F401

    raise KernelscopeError("the part-detector section is not wired yet")
