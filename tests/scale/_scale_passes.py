"""Every kind of data-set pass on one tiny network, sharded by ``context``; rank 0 saves the results.

Run under ``torchrun`` by tests/scale/test_scale_passes.py (``python _scale_passes.py OUT.npz``) and
imported by it for the one-process reference (:func:`compute`).
"""

from __future__ import annotations

import sys

import numpy as np

N = 44  # not a multiple of 2 x the batch size: ranks get unequal shards and a short last batch
BATCH = 8


def network(seed: int = 0):
    """Conv(1->4) ReLU MaxPool Conv(4->5) ReLU, average pool, Linear(5->3): logits on (1, 16, 16)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()


def data():
    rng = np.random.default_rng(7)
    images = rng.random((N, 1, 16, 16)).astype(np.float32)
    masks = np.zeros((N, 16, 16), dtype=bool)
    masks[np.arange(N), rng.integers(2, 12, N), 5] = True
    masks[:, 6:9, 6:9] |= rng.random((N, 1, 1)) < 0.5
    images += 1.5 * masks[:, None]  # the masks are bright: channels fire on them
    ood = rng.random((N - 6, 1, 16, 16)).astype(np.float32) ** 3
    labels = rng.integers(0, 3, N)
    bright = images.copy()
    bright[:BATCH] += 40.0  # a bright first batch: dissection's threshold falls below its floor
    return images, masks, ood, labels, bright


def compute(context) -> dict[str, np.ndarray]:
    """Top patches, dissection (+ init, + the fallback), shift (+ Mahalanobis), parts, templates, sharded."""
    from kernelscope.analysis.correlation import layer_templates
    from kernelscope.analysis.dissect import dissect, dissect_layer
    from kernelscope.analysis.parts import part_selectivity_layers
    from kernelscope.analysis.shift import shift
    from kernelscope.analysis.toppatches import top_patches

    net, init = network(0), network(1)
    images, masks, ood, labels, bright = data()
    out: dict[str, np.ndarray] = {}
    top = top_patches(net, "3", images, k=4, batch_size=BATCH, context=context)
    out.update(top_values=top.values, top_index=top.image_index, top_position=top.position, top_crops=top.crops,
               top_n=np.array(top.n_images))
    result = dissect(net, "0", images, {"dot": masks}, init_model=init, n_permutations=3, batch_size=BATCH,
                     context=context)
    for which, table in (("trained", result.trained), ("init", result.init)):
        out[f"dissect_{which}_threshold"] = table["threshold"]
        out[f"dissect_{which}_fire"] = table["fire_fraction"]
        for key in ("iou", "null_mean", "null_p95"):
            out[f"dissect_{which}_{key}"] = table["concepts"]["dot"][key]
    fallback = dissect_layer(net, "0", bright, {"dot": masks}, n_permutations=2, batch_size=BATCH, context=context)
    out.update(fallback_passes=np.array(fallback["passes"]), fallback_threshold=fallback["threshold"],
               fallback_iou=fallback["concepts"]["dot"]["iou"], fallback_fire=fallback["fire_fraction"])
    moved = shift(net, "3", images, ood, train_images=images, train_labels=labels, init_model=init, n_boot=50,
                  batch_size=BATCH, context=context)
    for which, table in (("trained", moved.trained), ("init", moved.init)):
        for key in ("auroc", "auroc_low", "auroc_high", "threshold", "rate_out"):
            out[f"shift_{which}_{key}"] = table["channels"][key]
        for name, scores in table["network"].items():
            out[f"shift_{which}_{name}"] = np.array([scores["auroc"], scores["fpr_at_95_tpr"]])
    out["shift_maxima_in"], out["shift_maxima_out"] = moved.maxima["in"], moved.maxima["out"]
    parts = part_selectivity_layers(net, images, {"dot": masks}, layers=["0", "3"], n_controls=3, n_boot=50,
                                    batch_size=BATCH, context=context)
    for name, found in parts.items():
        out[f"parts_{name}_intact"], out[f"parts_{name}_occluded"] = found.intact, found.occluded["dot"]
        out[f"parts_{name}_controls"] = found.controls["dot"]
        out[f"parts_{name}_selectivity"] = found.stats["dot"]["selectivity"]
        out[f"parts_{name}_output"] = found.output_occluded["dot"]
    templates = layer_templates(net, ["0", "3"], images, at="activation", positions=2, batch_size=BATCH,
                                context=context)
    for name, found in templates.items():
        out[f"templates_{name}_r2"], out[f"templates_{name}_r2_fit"] = found.r2, found.r2_fit
        out[f"templates_{name}_templates"], out[f"templates_{name}_bias"] = found.templates, found.bias
    return out


if __name__ == "__main__":
    import torch

    from kernelscope.train.distributed import setup, teardown

    torch.set_num_threads(1)
    context = setup("cpu")
    try:
        results = compute(context)
        if context.is_main:
            np.savez(sys.argv[1], world_size=np.array(context.world_size), **results)
    finally:
        teardown(context)
