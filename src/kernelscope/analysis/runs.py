"""Analyses of a whole faces run, shared by the demo and the report: dissection of every conv
layer and the distribution shift at the deepest one, each with the initialisation control.

Both read the conv layers' own outputs (``at="conv"``, before the ReLU), as the demo's
published numbers always have; ``kernelscope dissect`` and ``kernelscope shift`` default
to the activation after the conv.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["dissect_of_run", "shift_of_run", "RUN_AT"]

#: Where the demo's and report's run analyses read a conv layer (see the module docstring).
RUN_AT = "conv"


def dissect_of_run(run_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """``{layer: DissectResult}``: every conv layer of a faces run, eye and mouth masks, init control."""
    from kernelscope.analysis.dissect import dissect
    from kernelscope.data.face_masks import face_part_masks
    from kernelscope.sources import open_source

    src = open_source(run_dir)
    x, raw, _ = src.images("faces")  # the 100 lfw_subset faces, normalised as in training
    found = face_part_masks(raw)
    init = src.init_model(seed)
    return {layer: dissect(src.model, layer, x, found.masks, init_model=init, n_permutations=5 if quick else 20,
                           seed=seed, mask_counts=found.counts, at=RUN_AT)
            for layer in src.run.conv_layers}


def shift_of_run(run_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0) -> Any:
    """Faces in, held-out non-face patches ("objects") out, at the deepest conv layer of a run, with the init control.

    The objects are the net's own negative class, held out (see :func:`kernelscope.data.faces.held_out_patches`),
    not a novel domain.
    """
    from kernelscope.analysis.shift import shift
    from kernelscope.sources import open_source

    src = open_source(run_dir)
    layer = src.pick_layer(None)
    in_x, _, _ = src.images("faces")
    out_x, _, _ = src.images("objects", limit=200 if quick else None)
    data = src.run.dataset()
    return shift(src.model, layer, in_x, out_x, train_images=src.normalise(data.x_train),
                 train_labels=data.y_train, init_model=src.init_model(seed), n_boot=200 if quick else 1000,
                 seed=seed, names=("faces", "objects"), at=RUN_AT)

