"""Do face networks learn eye detectors? Four networks measured with one occlusion protocol.

:func:`part_contrast` puts the answer side by side: the pretrained ONet, a small network
(:func:`kernelscope.models.zoo.build_face_net`) trained on the easy face/non-face task,
the same network trained on a task that needs eyes (faces vs. the same faces with the eyes
inpainted away; :func:`kernelscope.data.face_tasks.face_task_data`), and its random
initialisation. Every network is measured by :func:`kernelscope.analysis.parts.part_selectivity_layers`
on every conv layer, read after its activation (the default ``at="activation"``).

The small networks are trained by :func:`train_face_net`, a short private Adam loop on
in-memory arrays: ``kernelscope.train.train`` reads data sets by name and writes a run
directory, so it cannot train on these arrays yet (docs/parts.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope.analysis.occlusion import onet_part_masks
from kernelscope.analysis.parts import PartSelectivity, part_selectivity_layers
from kernelscope.errors import KernelscopeError

if TYPE_CHECKING:  # torch is imported by the functions that run models
    from torch import nn

__all__ = ["train_face_net", "part_contrast", "PROTOCOL", "best_over_layers"]

#: The occlusion protocol of the contrast, shared by the replication's faces numbers
#: (:func:`kernelscope.analysis.replicate.headline_of_run`): fill 0 after normalisation (the data mean),
#: 8 equal-area controls, a 15-point margin, every conv layer read after its activation.
PROTOCOL: dict[str, Any] = {"n_controls": 8, "fill": "zero", "margin": 0.15, "at": "activation"}


def _eye_masks() -> np.ndarray:
    """(100, 25, 25) bool: ONet's eye discs on the ``lfw_subset`` faces (what the face tasks inpaint)."""
    from kernelscope.data.faces import lfw_faces

    return onet_part_masks(lfw_faces(), parts=["eyes"])["eyes"]


def train_face_net(task: str, *, seed: int = 0, epochs: int = 25, data: dict[str, Any] | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Train :func:`~kernelscope.models.zoo.build_face_net` on ``"easy"`` or ``"eyes"``
    (see :func:`~kernelscope.data.face_tasks.face_task_data`).

    Adam (lr 2e-3), batch 64, random shifts of up to 2 px; a few seconds on one core.
    Training runs on one intra-op thread (restored afterwards): a network this small
    gains nothing from more, and on a busy 2-core machine two OpenMP threads made it
    ~10x slower (measured: 70 s vs. 7 s wall for 25 epochs under load).

    Returns
    -------
    model : torch.nn.Module
        In eval mode; it expects images normalised as ``(x - data["mean"]) / data["std"]``.
    data : dict
        The task's data (as :func:`~kernelscope.data.face_tasks.face_task_data`) plus ``test_accuracy`` and ``seconds``.
    """
    import torch
    import torch.nn.functional as F

    from kernelscope.data.face_tasks import face_task_data
    from kernelscope.models.zoo import build_face_net

    started = time.perf_counter()
    data = face_task_data(task, eye_masks=_eye_masks(), seed=seed) if data is None else data
    model = build_face_net(seed)
    mean, std = data["mean"], data["std"]
    x = torch.from_numpy((data["x_train"] - mean) / std)  # (N, 1, 25, 25)
    y = torch.from_numpy(data["y_train"])  # (N,)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 64):
                idx = order[start:start + 64]
                xb = x[idx]
                dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))  # (B, 1, 25, 25): a small random shift
                loss = F.cross_entropy(model(xb), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy((data["x_test"] - mean) / std))
    data = dict(data)
    data["test_accuracy"] = float((logits.argmax(1).numpy() == data["y_test"]).mean())
    data["seconds"] = time.perf_counter() - started
    return model, data


def best_over_layers(results: Mapping[str, PartSelectivity], part: str) -> dict[str, Any]:
    """The most selective channel for ``part`` over several layers, with detector counts per layer.

    Returns ``layer`` and the channel's numbers (:meth:`PartSelectivity.best`: ``part_drop``,
    ``control_drop``, ``selectivity``, ``ci``, ``detector``) plus ``detector_gated`` (its part drop
    also beyond the equal-area controls' bootstrap interval), ``n_detectors`` and
    ``n_detectors_gated`` per layer, each layer's best channel (``per_layer``) and what was read.
    """
    best: dict[str, Any] = {"layer": None, "channel": None}
    for name, result in results.items():
        candidate = result.best(part)
        if candidate["channel"] is None:
            continue
        if best["channel"] is None or candidate["selectivity"] > best["selectivity"]:
            best = {"layer": name, **candidate}
    if best["channel"] is not None:
        best["detector_gated"] = bool(results[best["layer"]].stats[part]["detector_gated"][best["channel"]])
    best["n_detectors"] = {name: len(result.detectors(part)) for name, result in results.items()}
    best["n_detectors_gated"] = {name: len(result.detectors(part, gated=True)) for name, result in results.items()}
    best["per_layer"] = {name: result.best(part) for name, result in results.items()}
    best["read"] = {name: result.read for name, result in results.items()}
    first = next(iter(results.values()), None)
    if first is not None and part in first.output_stats:
        best["output"] = first.output_stats[part]
    return best


def part_contrast(seed: int = 0, quick: bool = False, *, part: str = "eyes",
                  dissection: bool = False) -> dict[str, Any]:
    """Do face networks learn eye detectors? Four networks measured with the same protocol.

    - ``onet``: MTCNN's pretrained ONet on the 100 ``lfw_subset`` faces (48x48 RGB);
    - ``easy``: :func:`~kernelscope.models.zoo.build_face_net` trained on face vs. non-face;
    - ``eyes``: the same network trained on the task that needs eyes (faces vs.
      faces with the eyes inpainted away);
    - ``random``: the same network at its random initialisation (the control).

    The small networks are measured on held-out faces. Eyes are discs at ONet's
    landmarks, filled with 0 after normalisation (the data mean; mid-grey for ONet),
    8 controls, margin 0.15, 95% bootstrap intervals. Every conv layer is read after its
    activation (ONet's PReLU, the small nets' ReLU) and each channel's maximum is clamped
    at 0, so no drop exceeds 100%.

    Parameters
    ----------
    seed : int
    quick : bool
        300 bootstrap resamples instead of 1000 (for the demo and tests).
    part : str
        "eyes", "nose" or "mouth".
    dissection : bool
        Also run Network Dissection (:func:`kernelscope.analysis.dissect.dissect`, 20 mask
        permutations) on every conv layer of every network, with the same images and masks.

    Returns
    -------
    dict
        ``models``: per network the best channel over its conv layers (layer,
        channel, part_drop, control_drop, selectivity, ci, detector, detector_gated: its drop
        also beyond the equal-area controls' bootstrap interval), the best channel of each
        layer (``per_layer``), the number of detectors per layer (``n_detectors``, and
        ``n_detectors_gated``),
        the output effect (face probability intact, part
        occluded, controls), what was read for each layer (``read``), for the trained ones
        test accuracy, and with
        ``dissection`` per layer the best IoU, its channel, the largest permutation
        p95 and the number of IoU detectors; ``settings`` and ``seconds``.
    """
    from kernelscope.data.face_tasks import face_task_data
    from kernelscope.data.faces import lfw_faces
    from kernelscope.models.onet import load_onet, preprocess_faces

    if part not in ("eyes", "nose", "mouth"):
        raise KernelscopeError(f"part: expected 'eyes', 'nose' or 'mouth', got {part!r}")
    started = time.perf_counter()
    n_boot = 300 if quick else 1000
    epochs = 25  # fewer (12) left the eye channels below the margin; 25 gave 4-10 detectors on seeds 0-2
    options = {"parts": [part], **PROTOCOL, "n_boot": n_boot, "seed": seed}
    models: dict[str, Any] = {}

    def measure(model: nn.Module, inputs: np.ndarray, masks: dict[str, np.ndarray],
                layers: list[str]) -> dict[str, Any]:
        results = part_selectivity_layers(model, inputs, masks, layers=layers, **options)
        out = best_over_layers(results, part)
        if dissection:
            from kernelscope.analysis.dissect import dissect

            out["dissection"] = {}
            for layer in layers:
                summary = dissect(model, layer, inputs, masks, n_permutations=20, seed=seed,
                                  at=options["at"]).to_dict()["summary"]["trained"][part]
                out["dissection"][layer] = {k: summary[k] for k in
                                            ("best_channel", "best_iou", "max_null_p95", "n_detectors")}
        return out

    faces = lfw_faces()  # (100, 1, 25, 25)
    onet_layers = ["conv1", "conv2", "conv3", "conv4"]
    models["onet"] = measure(load_onet(), preprocess_faces(faces), onet_part_masks(faces, 48, parts=[part]),
                             onet_layers)

    layers = ["0", "3", "6"]
    eye_masks = _eye_masks()  # (100, 25, 25)
    data_easy = face_task_data("easy", eye_masks=eye_masks, seed=seed)
    data_eyes = face_task_data("eyes", eye_masks=eye_masks, seed=seed)
    # the same held-out faces for all three small nets (both tasks split the faces with the same seed)
    test_faces = data_easy["test_faces"]
    masks = {"eyes": data_easy["test_eye_masks"]} if part == "eyes" else onet_part_masks(test_faces, parts=[part])
    for name, data in (("easy", data_easy), ("eyes", data_eyes)):
        model, info = train_face_net(name, seed=seed, epochs=epochs, data=data)
        test = ((info["test_faces"] - info["mean"]) / info["std"]).astype(np.float32)
        models[name] = {**measure(model, test, masks, layers), "test_accuracy": info["test_accuracy"],
                        "train_seconds": info["seconds"]}
    test = ((test_faces - data_easy["mean"]) / data_easy["std"]).astype(np.float32)
    from kernelscope.models.init import reinitialised

    # the control: the network at initialisation through the one init control (bit-identical to build_face_net(seed))
    models["random"] = measure(reinitialised(model, seed=seed), test, masks, layers)
    return {"part": part, "models": models,
            "settings": {**options, "epochs": epochs, "layers_small": layers, "layers_onet": onet_layers,
                         "images": {"onet": 100, "small": int(len(test_faces))}, "dissection": dissection},
            "seconds": time.perf_counter() - started}
