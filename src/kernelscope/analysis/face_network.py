"""A real face network, measured the way the question asks: dlib's face-recognition ResNet.

"If your CNN has been trained on human faces, it will probably have a convolution which
responds strongly to a human eye" -- and goes quiet on monkey faces and bicycles? One call
measures it on a pretrained network (by default ``dlib-face-resnet``), each number beside its
control, on real photographs that installed packages ship (:mod:`kernelscope.data.photos`):

1. its first layer: the kernel atlas, spatial classes and colour census, against the nulls;
2. top patches of a middle layer on real aligned face chips;
3. eye and mouth selectivity by occlusion on the chips (discs at the eyes, a capsule over the
   mouth, equal-area occlusions elsewhere as the control), trained network and network at
   initialisation;
4. the distribution shift at the deepest conv layer: faces against the closest things at hand
   to "monkey faces" (a mandrill, a cat) and to "bicycles" (a motorcycle and other objects),
   every set in grey (most face chips are grey), with the network at initialisation as control.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelscope._display import Displayed, Picture, Summary

__all__ = ["FaceNetworkResult", "face_network", "chip_part_masks", "PART_LAYERS", "PATCH_LAYER"]

#: Where the occlusion protocol looks: the last conv of stages 2-4 (receptive fields from about an eye to a face).
PART_LAYERS = ("layer2.3.conv2", "layer3.2.conv2", "layer4.2.conv2")
#: The layer whose top patches are drawn.
PATCH_LAYER = "layer2.3.conv2"
#: The deepest conv layer: where the shift is measured.
SHIFT_LAYER = "layer5.0.conv2"


@dataclass(repr=False)
class FaceNetworkResult(Displayed):
    """What :func:`face_network` measured; ``summary()`` holds the numbers the demo prints.

    In a notebook: those numbers, each beside its control, the shift per image set and the
    first layer's kernels.
    """

    source: str
    atlas: Any
    patches: Any
    parts: dict[str, Any]
    parts_init: dict[str, Any]
    shifts: dict[str, Any]
    images: dict[str, str] = field(default_factory=dict)  # image set -> description

    def summary(self) -> dict[str, Any]:
        a = self.atlas
        spatial = ("edge-like", "gabor-like")
        out: dict[str, Any] = {
            "source": self.source,
            "atlas": {"layer": a.layer, "n": int(a.shape[0]),
                      "edge_or_gabor": float(sum(a.fractions.get(c, 0.0) for c in spatial)),
                      "controls": {name: float(sum(f.get(c, 0.0) for c in spatial))
                                   for name, f in a.control_fractions.items()}},
        }
        headline = a.headline()
        if "structured_beyond_spectrum" in headline:
            out["atlas"]["structured_beyond_spectrum"] = headline["structured_beyond_spectrum"]
            out["atlas"]["structured_beyond_spectrum_control_smooth"] = headline.get(
                "structured_beyond_spectrum_control_smooth")
        colour = a.to_dict().get("colour")
        if colour:
            out["colour"] = {"fractions": colour["fractions"], "control_fractions": colour["control_fractions"]}
        for part in ("eyes", "mouth"):
            best = _best(self.parts, part)
            init = _best(self.parts_init, part)
            out[f"occlusion_{part}"] = {**best, "init_selectivity": init.get("selectivity"),
                                        "init_detectors": init.get("n_detectors"),
                                        "init_detectors_gated": init.get("n_detectors_gated")}
        out["shift"] = {name: {"layer": r.layer, "read": r.read, "channels": len(r.trained["channels"]["auroc"]),
                               "quiet": len(r.trained["quiet_on_ood"]), "louder": len(r.trained["fire_more_on_ood"]),
                               "init_quiet": len(r.init["quiet_on_ood"]) if r.init else None,
                               "init_louder": len(r.init["fire_more_on_ood"]) if r.init else None,
                               "n_in": r.n_in, "n_out": r.n_out}
                        for name, r in self.shifts.items()}
        return out


    def _display_summary(self) -> Summary:
        s = self.summary()
        a = s["atlas"]
        items: list[tuple[str, Any]] = []
        if "structured_beyond_spectrum" in a:
            items += [(f"{a['layer']}: structured beyond spectrum", a["structured_beyond_spectrum"]),
                      ("  smoothed random kernels, same test", a["structured_beyond_spectrum_control_smooth"])]
        items.append((f"{a['layer']}: edge- or Gabor-like", a["edge_or_gabor"]))
        items += [(f"  control {name}", v) for name, v in a["controls"].items()]
        for part in ("eyes", "mouth"):
            o = s[f"occlusion_{part}"]
            items += [(f"{part} detectors by occlusion (init)", f"{o['n_detectors']} ({o['init_detectors']})"),
                      (f"best {part} selectivity (init)", f"{_num(o['selectivity'])} ({_num(o['init_selectivity'])}), "
                                                          f"{o['layer']} channel {o['channel']}")]
        table = [{"faces against": name, **r} for name, r in s["shift"].items()]
        return Summary(f"face network {self.source}: first layer {a['layer']} ({a['n']} kernels), occlusion at "
                       f"{len(self.parts)} layers, shift against {len(self.shifts)} image sets", items, table,
                       brief=3 if "structured_beyond_spectrum" in a else 1)

    def _display_picture(self) -> Picture | None:
        return self.atlas._display_picture() if isinstance(self.atlas, Displayed) else None


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _best(results: dict[str, Any], part: str) -> dict[str, Any]:
    """:func:`~kernelscope.analysis.part_contrast.best_over_layers` with its detector counts summed over the layers."""
    from kernelscope.analysis.part_contrast import best_over_layers

    over = best_over_layers(results, part)
    best = {"selectivity": None, **{k: v for k, v in over.items()
                                    if k not in ("per_layer", "read", "output", "detector_gated")}}
    best["n_detectors"] = sum(over["n_detectors"].values())
    best["n_detectors_gated"] = sum(over["n_detectors_gated"].values())
    return best


def _grey(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) RGB -> the BT.709 luminance on all three channels."""
    from kernelscope.data.images import LUMA_BT709

    luma = np.tensordot(LUMA_BT709.astype(np.float32), images, axes=([0], [1]))  # (N, H, W)
    return np.repeat(luma[:, None], 3, axis=1).astype(np.float32)


def chip_part_masks(landmarks: np.ndarray, size: int, *, radius: float = 0.07) -> dict[str, np.ndarray]:
    """Eye discs and a mouth capsule on face chips, from (N, 3, 2) eye/eye/mouth points in chip pixels.

    The mouth corners are put at the mouth centre +- 0.35 of the distance between the eyes (the
    chips are aligned, so the mouth is level); ``radius`` is a fraction of the chip side.

    Examples
    --------
    >>> marks = np.array([[[50.0, 60.0], [100.0, 60.0], [75.0, 110.0]]])
    >>> masks = chip_part_masks(marks, 150)
    >>> sorted(masks), bool(masks["eyes"][0, 60, 50]), bool(masks["eyes"][0, 110, 75]), bool(masks["mouth"][0, 110, 75])
    (['eyes', 'mouth'], True, False, True)
    """
    from kernelscope.analysis.occlusion import landmark_part_masks

    marks = np.asarray(landmarks, dtype=np.float64)
    eyes = np.linalg.norm(marks[:, 1] - marks[:, 0], axis=1)[:, None]  # (N, 1)
    mouth = marks[:, 2]
    half = np.concatenate([0.35 * eyes, np.zeros_like(eyes)], axis=1)  # (N, 2)
    nose = (marks[:, 0] + marks[:, 1] + 2 * mouth) / 4
    five = np.stack([marks[:, 0], marks[:, 1], nose, mouth - half, mouth + half], axis=1)  # (N, 5, 2) px
    fractions = (five + 0.5) / size  # landmark_part_masks: a fraction f maps to the pixel f * side - 0.5
    return landmark_part_masks(fractions, size, parts=["eyes", "mouth"], radius=radius)


def face_network(source: str = "dlib-face-resnet", *, quick: bool = False, seed: int = 0,
                 n_null: int | None = None) -> FaceNetworkResult:
    """Measure a pretrained face network on real photographs (see the module docstring).

    Parameters
    ----------
    source : str
        A SOURCE that takes 150x150 RGB face chips (default ``dlib-face-resnet``).
    quick : bool
        Fewer faces, nulls and bootstrap resamples (tests).
    seed : int
        Seeds the nulls, the occlusion controls, the bootstraps and the init control.

    Returns
    -------
    FaceNetworkResult
    """
    from kernelscope.analysis.atlas import atlas_of
    from kernelscope.analysis.parts import part_selectivity_layers
    from kernelscope.analysis.shift import shift
    from kernelscope.analysis.toppatches import top_patches
    from kernelscope.data import photos
    from kernelscope.sources import open_source

    src = open_source(source)
    size = src.input_shape[1] if src.input_shape else 150
    n_null = n_null or (200 if quick else 1000)
    atlas = atlas_of(source, n_null=n_null, seed=seed)

    faces = photos.face_chips(size)
    limit = 24 if quick else len(faces)
    chips, marks = faces.images[:limit], faces.landmarks[:limit]
    inputs = src.normalise(chips)
    masks = chip_part_masks(marks, size)
    patches = top_patches(src.model, PATCH_LAYER, inputs, k=6, display=chips)
    # the chips are raw [0, 1] (the network normalises them itself): a blurred copy hides a part without
    # drawing an edge of its own, where black or grey discs would
    options = {"layers": list(PART_LAYERS), "parts": ["eyes", "mouth"], "fill": "blur", "n_controls": 8,
               "margin": 0.15, "n_boot": 200 if quick else 1000, "seed": seed, "target": None}
    init_model = src.init_model(seed)
    parts = part_selectivity_layers(src.model, inputs, masks, **options)
    parts_init = part_selectivity_layers(init_model, inputs, masks, **options)

    animals = photos.animal_faces(size, n=8 if quick else 16, seed=seed)
    objects = photos.objects(size, n=16 if quick else 64, seed=seed)
    # Most chips are grey (lfw_subset); the animals and objects are colour photos. All three sets go in as
    # grey (luminance on the three channels), so that colour is not what tells them apart.
    grey_faces = src.normalise(_grey(chips))
    shifts = {}
    for name, other in (("animal faces", animals), ("objects", objects)):
        shifts[name] = shift(src.model, SHIFT_LAYER, grey_faces, src.normalise(_grey(other.images)),
                             init_model=init_model, n_boot=200 if quick else 1000, seed=seed,
                             names=("faces", name), logits=src.classes is not None)
    images = {"faces": faces.description, "animal faces": animals.description, "objects": objects.description}
    return FaceNetworkResult(src.label, atlas, patches, parts, parts_init, shifts, images)
