"""Faces and non-faces that ship with scikit-image and scikit-learn (no download).

- :func:`lfw_faces`: the 100 aligned 25x25 face crops of ``skimage.data.lfw_subset()``
  (indices 0-99).
- :func:`lfw_nonfaces`: its 100 non-face crops (indices 100-199).
- :func:`object_patches`: grey 25x25 patches cut (seeded) at random positions and
  scales from natural images without human faces (motorcycle, cat, coffee, rocket,
  textures, moon, clock, text, galaxies, a Chinese temple, a flower).
- :func:`held_out_patches`: more such patches, cut with another seed
  (:data:`HELD_OUT_SEED`) and none identical to a training patch: non-faces a faces
  net never saw, but of its own negative class (same source images), not a new domain.

Together the first three make the "faces" data set: face vs. non-face.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["lfw_faces", "lfw_nonfaces", "object_patches", "held_out_patches", "PATCH_SOURCES", "HELD_OUT_SEED"]

#: Natural images the non-face patches are cut from; none shows a human face
#: (``astronaut`` and ``camera`` do, and ``coins`` carries heads, so they are left out).
PATCH_SOURCES = ("stereo_motorcycle", "chelsea", "coffee", "rocket", "brick", "grass", "gravel",
                 "text", "moon", "clock", "page", "hubble_deep_field", "china", "flower")

#: Seed of :func:`held_out_patches`. The ``faces`` data set cuts its training patches with the
#: run's ``split_seed`` (0 by default, small in practice); this one is far from those.
HELD_OUT_SEED = 1000


@functools.lru_cache(maxsize=1)
def _lfw() -> np.ndarray:
    from skimage.data import lfw_subset

    return lfw_subset().astype(np.float32)  # (200, 25, 25) in [0, 1]


def lfw_faces() -> np.ndarray:
    """The 100 face crops of ``lfw_subset``.

    Returns
    -------
    ndarray of shape (100, 1, 25, 25), float32 in [0, 1]

    Examples
    --------
    >>> x = lfw_faces()
    >>> x.shape, x.dtype.name, bool(0.0 <= x.min() <= x.max() <= 1.0)
    ((100, 1, 25, 25), 'float32', True)
    """
    return _lfw()[:100, None].copy()


def lfw_nonfaces() -> np.ndarray:
    """The 100 non-face crops of ``lfw_subset``.

    Returns
    -------
    ndarray of shape (100, 1, 25, 25), float32 in [0, 1]
    """
    return _lfw()[100:, None].copy()


def _source_image(name: str) -> np.ndarray:
    """One grey source image, float64 in [0, 1], shape (H, W)."""
    from skimage import data
    from skimage.color import rgb2gray

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    else:
        image = getattr(data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
            image = image[0]
    image = np.asarray(image)
    if image.ndim == 3:
        image = rgb2gray(image[..., :3])
    elif image.dtype == np.uint8:
        image = image / 255.0
    return np.asarray(image, dtype=np.float64)


def object_patches(n: int = 660, *, seed: int = 0, size: int = 25) -> np.ndarray:
    """Grey non-face patches cut at random positions and scales from bundled natural images.

    Each patch is a square of side drawn uniformly in ``[size, min(H, W) / 3]`` pixels,
    resized (with anti-aliasing) to ``size x size``, in round-robin over
    :data:`PATCH_SOURCES`.

    Parameters
    ----------
    n : int
        Number of patches.
    seed : int
        Seed of the positions and scales.
    size : int
        Side of the returned patches.

    Returns
    -------
    ndarray of shape (n, 1, size, size), float32 in [0, 1]

    Examples
    --------
    >>> p = object_patches(14, seed=1)
    >>> p.shape, bool((object_patches(14, seed=1) == p).all())
    ((14, 1, 25, 25), True)
    """
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    sources = [_source_image(name) for name in PATCH_SOURCES]
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        image = sources[i % len(sources)]
        h, w = image.shape
        side = int(rng.integers(size, max(size + 1, min(h, w) // 3 + 1)))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = image[top:top + side, left:left + side]
        patch = resize(crop, (size, size), anti_aliasing=side > size, preserve_range=True)
        out[i, 0] = np.clip(patch, 0.0, 1.0)
    return out


def held_out_patches(n: int = 660, *, training_seed: int = 0, n_training: int = 660,
                     size: int = 25) -> np.ndarray:
    """Non-face patches that a faces net trained with ``training_seed`` never saw.

    Cut as :func:`object_patches` cuts them (same source images, new random positions and
    scales) with seed :data:`HELD_OUT_SEED` (``HELD_OUT_SEED + 1`` when the training set was
    cut with it); a patch identical to one of the training patches
    ``object_patches(n_training, seed=training_seed)`` is skipped and the next one cut.
    They are held-out samples of the network's own negative class (non-face), not a new
    domain: many overlap, in part, a training crop of the same image.

    Parameters
    ----------
    n : int
        Number of patches.
    training_seed : int
        Seed the training patches were cut with (``faces(seed=...)``, a run's ``split_seed``).
    n_training : int
        Number of training patches (``faces(n_patches=...)``; 660 for the bundled data set).
    size : int
        Side of the returned patches.

    Returns
    -------
    ndarray of shape (n, 1, size, size), float32 in [0, 1]

    Examples
    --------
    >>> held = held_out_patches(14, n_training=14)
    >>> seen = {p.tobytes() for p in object_patches(14, seed=0)}
    >>> held.shape, any(p.tobytes() in seen for p in held)
    ((14, 1, 25, 25), False)
    """
    seed = HELD_OUT_SEED + 1 if training_seed == HELD_OUT_SEED else HELD_OUT_SEED
    training = {p.tobytes() for p in object_patches(n_training, seed=training_seed, size=size)}
    count = n
    while True:  # cutting more keeps the earlier patches (the same random stream): a prefix
        cut = object_patches(count, seed=seed, size=size)
        kept = cut[[patch.tobytes() not in training for patch in cut]]
        if len(kept) >= n:
            return kept[:n]
        count += n - len(kept)
