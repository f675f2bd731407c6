"""The two face tasks of the parts contrast (:mod:`kernelscope.analysis.part_contrast`).

``"easy"``: faces vs. non-faces. ``"eyes"``: a task that needs eyes: faces vs. the same
faces with both eyes inpainted away; so that "something was painted over" is no cue,
faces with an equal-area region elsewhere inpainted stay positives.

The eye masks are an argument: they come from ONet's landmarks
(:func:`kernelscope.analysis.occlusion.onet_part_masks`), which this layer may not run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.data.face_masks import control_offsets, shift_mask
from kernelscope.errors import KernelscopeError

__all__ = ["FACE_TASKS", "face_task_data"]

FACE_TASKS = ("easy", "eyes")


def _inpaint(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fill the masked pixels from their surroundings (OpenCV Telea): skin tone where an eye was."""
    import cv2

    out = np.empty_like(images)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        img8 = np.clip(np.rint(image[0] * 255), 0, 255).astype(np.uint8)
        filled = cv2.inpaint(img8, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        out[i, 0] = filled.astype(np.float32) / 255.0
    return out


def _random_elsewhere(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each mask moved once to a random place that does not overlap it (equal area)."""
    out = np.zeros_like(masks)
    for i, mask in enumerate(masks):
        dy, dx = control_offsets(mask, 1, rng)[0]
        out[i] = shift_mask(mask, int(dy), int(dx))
    return out


def face_task_data(task: str, *, eye_masks: np.ndarray, seed: int = 0, test_fraction: float = 0.4,
                   n_patches: int = 300) -> dict[str, Any]:
    """One face task on the 100 ``lfw_subset`` faces, split by face (no face is in both splits).

    ``"easy"``: faces vs. non-faces (``lfw_subset`` non-faces and patches of natural
    images). ``"eyes"``: the same, plus hard negatives that are faces with both
    eyes inpainted away (Telea inpainting inside the dilated eye masks), and,
    so that "something was painted over" is no cue, faces with an equal-area
    region elsewhere inpainted stay positives. Faces are augmented with their
    mirror images.

    Parameters
    ----------
    task : "easy" or "eyes"
    eye_masks : ndarray of shape (100, 25, 25), bool
        Both eyes of each face of :func:`kernelscope.data.faces.lfw_faces` (the parts
        contrast uses the discs at ONet's landmarks).
    seed : int
        Seeds the split, the patches and the "elsewhere" placements.
    test_fraction : float
        Share of the faces (and of the non-faces) held out.
    n_patches : int
        Natural-image patches among the non-faces.

    Returns
    -------
    dict
        ``x_train, y_train, x_test, y_test`` (float32 (N, 1, 25, 25) in [0, 1], int64),
        ``test_faces`` (the held-out intact faces), ``test_eye_masks`` (their eye masks),
        ``mean``, ``std``.
    """
    from scipy.ndimage import binary_dilation

    from kernelscope.data.faces import lfw_faces, lfw_nonfaces, object_patches

    if task not in FACE_TASKS:
        raise KernelscopeError(f"task: expected 'easy' or 'eyes', got {task!r}")
    rng = np.random.default_rng(seed)
    faces = lfw_faces()  # (100, 1, 25, 25)
    eye_masks = np.asarray(eye_masks)
    if eye_masks.shape != (len(faces), *faces.shape[2:]):
        raise KernelscopeError(f"eye_masks: expected shape {(len(faces), *faces.shape[2:])} (one mask per "
                               f"lfw_subset face), got {tuple(eye_masks.shape)}")
    eye_masks = eye_masks.astype(bool)
    negatives = np.concatenate([lfw_nonfaces(), object_patches(n_patches, seed=seed)])
    order = rng.permutation(len(faces))
    n_test = int(round(test_fraction * len(faces)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    neg_order = rng.permutation(len(negatives))
    n_neg_test = int(round(test_fraction * len(negatives)))
    neg_test, neg_train = negatives[neg_order[:n_neg_test]], negatives[neg_order[n_neg_test:]]

    def positives_and_hard(idx: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        f = faces[idx]
        m = eye_masks[idx]
        pos = [f, f[..., ::-1]]
        neg = []
        if task == "eyes":
            grown = np.stack([binary_dilation(mask, iterations=1) for mask in m])
            no_eyes = _inpaint(f, grown)
            elsewhere = _inpaint(f, _random_elsewhere(grown, rng))
            pos += [elsewhere, elsewhere[..., ::-1]]
            neg += [no_eyes, no_eyes[..., ::-1]]
        return pos, neg

    def assemble(pos: list[np.ndarray], neg: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        xp, xn = np.concatenate(pos), np.concatenate(neg)
        x = np.ascontiguousarray(np.concatenate([xp, xn]), dtype=np.float32)
        y = np.concatenate([np.ones(len(xp)), np.zeros(len(xn))]).astype(np.int64)
        return x, y

    pos_tr, hard_tr = positives_and_hard(train_idx)
    pos_te, hard_te = positives_and_hard(test_idx)
    x_train, y_train = assemble(pos_tr, hard_tr + [neg_train])
    x_test, y_test = assemble(pos_te, hard_te + [neg_test])
    mean, std = float(x_train.mean()), float(x_train.std())
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "test_faces": faces[test_idx], "test_eye_masks": eye_masks[test_idx], "mean": mean, "std": std}
