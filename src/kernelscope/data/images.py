"""Real images: the user's files and the photographs that installed packages ship.

``load_image("photo.png")`` reads PNG, JPEG, TIFF (and anything else Pillow reads: BMP,
GIF, WebP, ...) in grey or colour, 8 or 16 bits, with or without alpha;
``load_image("sample:camera")`` loads a bundled image (no network): the photographs
that scikit-image, scikit-learn and matplotlib ship, and OpenCV's example images from
Debian's ``opencv-doc`` package (``sample:baboon``, ``sample:messi5``, ``sample:fruits``, ...;
:data:`OPENCV_SAMPLES_DIR`; a clear error names the package when it is not installed). The result is
always float64 in ``[0, 1]``: ``(H, W)`` for grey images, ``(H, W, 3)`` for colour.

Conventions
-----------
* 8-bit values are divided by 255, 16-bit values by 65535 (16-bit colour PNG/TIFF are
  read at full depth through OpenCV, since Pillow reduces them to 8 bits).
* Alpha is **composited over white** by default (what a viewer shows on a white
  page), or dropped with ``alpha="drop"`` (keeps the stored colours, which under fully
  transparent pixels are often arbitrary).
* Luminance (``gray=True``, :func:`to_gray`) uses the ITU-R **BT.709** luma weights as
  scikit-image's ``rgb2gray`` writes them, ``0.2125 R + 0.7154 G + 0.0721 B``, applied to
  the stored (gamma-encoded) values, so ``to_gray(x) == skimage.color.rgb2gray(x)``.
  (Pillow's ``convert("L")`` uses BT.601, ``0.299, 0.587, 0.114``.)
* Multi-frame files (animated GIF, multi-page TIFF) give their first frame.
* A JPEG's EXIF orientation tag is applied (the image comes upright, as viewers show it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError, suggest

__all__ = ["load_image", "sample_image_names", "sample_image_info", "to_gray", "as_image", "LUMA_BT709",
           "open_image", "MAX_IMAGE_PIXELS", "OPENCV_SAMPLES_DIR"]

LUMA_BT709 = np.array([0.2125, 0.7154, 0.0721])  # scikit-image's rgb2gray weights (BT.709)

#: The largest image kernelscope reads: 50 megapixels (a 8660 x 5773 photo). Checked from the file's header
#: before decoding (:func:`open_image`) and on arrays. Filtering one costs ~100 bytes a pixel (float64 copies).
MAX_IMAGE_PIXELS = 50_000_000
_MAX_PIXELS = MAX_IMAGE_PIXELS


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disp)

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook

        return _read_file(Path(cbook.get_sample_data(filename, asfileobj=False)), alpha="composite")

    return load


#: Where Debian's ``opencv-doc`` package installs OpenCV's example images (``dpkg -L opencv-doc``).
OPENCV_SAMPLES_DIR = Path("/usr/share/doc/opencv-doc/examples/data")

# Debian's copyright file for opencv-doc (/usr/share/doc/opencv-doc/copyright) has no entry of its own for
# samples/data: the images fall under its "Files: *" stanza (Apache-2.0 AND BSD-3-Clause; Intel, Willow
# Garage, NVIDIA, AMD, OpenCV Foundation, Itseez, ... "and respective opencv contributors"). Debian removed
# the Lena images as non-free; who took the other photos, and on what terms, is not recorded there.
_OPENCV_LICENCE = ("OpenCV sample data (opencv-doc); Debian's copyright file covers it only by its "
                   "'Files: *' entry, Apache-2.0 AND BSD-3-Clause; the photo's own origin is not recorded")


def _opencv_doc(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        path = Path(OPENCV_SAMPLES_DIR) / filename
        if not path.is_file():
            raise KernelscopeError(
                f"sample image {filename!r} needs the Debian package opencv-doc (apt-get install opencv-doc): "
                f"{str(path)!r} not found")
        return _read_file(path, alpha="composite")

    return load


# name -> (source package, loader, description). Only images that load offline: checked by a test
# (the opencv-doc ones need that Debian package, which the README's set-up installs).
_SAMPLES: dict[str, tuple[str, Callable[[], np.ndarray], str]] = {
    "astronaut": ("scikit-image", _skimage("astronaut"), "colour portrait of astronaut Eileen Collins"),
    "camera": ("scikit-image", _skimage("camera"), "grey photo of a cameraman, the classic test image"),
    "coffee": ("scikit-image", _skimage("coffee"), "colour photo of a coffee cup"),
    "chelsea": ("scikit-image", _skimage("chelsea"), "colour photo of Chelsea the cat"),
    "rocket": ("scikit-image", _skimage("rocket"), "colour photo of a rocket on its launch pad"),
    "brick": ("scikit-image", _skimage("brick"), "grey texture: a brick wall"),
    "grass": ("scikit-image", _skimage("grass"), "grey texture: grass"),
    "gravel": ("scikit-image", _skimage("gravel"), "grey texture: gravel"),
    "text": ("scikit-image", _skimage("text"), "grey photo of text on a sign"),
    "page": ("scikit-image", _skimage("page"), "grey scan of a book page"),
    "coins": ("scikit-image", _skimage("coins"), "grey photo of Greek coins"),
    "moon": ("scikit-image", _skimage("moon"), "grey photo of the lunar surface"),
    "clock": ("scikit-image", _skimage("clock"), "grey photo of a motion-blurred clock"),
    "cell": ("scikit-image", _skimage("cell"), "grey microscope image of a cell"),
    "horse": ("scikit-image", _skimage("horse"), "binary silhouette of a horse"),
    "hubble_deep_field": ("scikit-image", _skimage("hubble_deep_field"), "colour: Hubble deep field"),
    "retina": ("scikit-image", _skimage("retina"), "colour photo of a human retina"),
    "stereo_motorcycle": ("scikit-image", _skimage("stereo_motorcycle"), "colour: left image of a stereo pair"),
    "logo": ("scikit-image", _skimage("logo"), "colour scikit-image logo (RGBA, composited over white)"),
    "colorwheel": ("scikit-image", _skimage("colorwheel"), "colour wheel"),
    "checkerboard": ("scikit-image", _skimage("checkerboard"), "grey synthetic checkerboard"),
    "immunohistochemistry": ("scikit-image", _skimage("immunohistochemistry"), "colour: stained tissue"),
    "microaneurysms": ("scikit-image", _skimage("microaneurysms"), "grey: retinal microaneurysms"),
    "china": ("scikit-learn", _sklearn("china.jpg"), "colour photo of a Chinese temple"),
    "flower": ("scikit-learn", _sklearn("flower.jpg"), "colour photo of a flower"),
    "grace_hopper": ("matplotlib", _matplotlib("grace_hopper.jpg"), "colour portrait of Grace Hopper"),
    "baboon": ("opencv-doc", _opencv_doc("baboon.jpg"), "colour photo of a mandrill's face (the USC-SIPI "
               "'Mandrill' test image)"),
    "messi5": ("opencv-doc", _opencv_doc("messi5.jpg"), "colour photo of a football player kicking a ball"),
    "fruits": ("opencv-doc", _opencv_doc("fruits.jpg"), "colour photo of cut citrus fruits, kiwi, cabbage"),
    "butterfly": ("opencv-doc", _opencv_doc("butterfly.jpg"), "colour photo of a butterfly on a leaf"),
    "building": ("opencv-doc", _opencv_doc("building.jpg"), "colour photo of an office building"),
    "home": ("opencv-doc", _opencv_doc("home.jpg"), "colour photo of a palace's towers against the sky"),
    "happy_fish": ("opencv-doc", _opencv_doc("HappyFish.jpg"), "colour cartoon of a smiling fish"),
    "aero1": ("opencv-doc", _opencv_doc("aero1.jpg"), "colour aerial photo of a town"),
    "aero3": ("opencv-doc", _opencv_doc("aero3.jpg"), "colour aerial photo of a town and a road"),
    "squirrel": ("opencv-doc", _opencv_doc("squirrel_cls.jpg"), "colour photo of a squirrel on a branch"),
    "apple": ("opencv-doc", _opencv_doc("apple.jpg"), "colour photo of an apple"),
    "orange": ("opencv-doc", _opencv_doc("orange.jpg"), "colour photo of an orange"),
    "starry_night": ("opencv-doc", _opencv_doc("starry_night.jpg"), "colour photo of van Gogh's Starry Night"),
    "board": ("opencv-doc", _opencv_doc("board.jpg"), "colour photo of a circuit board"),
    "leuven": ("opencv-doc", _opencv_doc("leuvenA.jpg"), "colour photo of a cobbled street of brick houses"),
    "graffiti": ("opencv-doc", _opencv_doc("graf1.png"), "colour photo of a graffiti wall (cartoon figures)"),
}

# name -> where its licence is stated. The scikit-image notes are quoted from each loader's docstring.
_LICENCES: dict[str, str] = {
    "astronaut": "NASA; public domain (skimage.data.astronaut)",
    "camera": "CC0, Lav Varshney (skimage.data.camera)",
    "coffee": "CC0, Rachel Michetti (skimage.data.coffee)",
    "chelsea": "CC0, Stefan van der Walt (skimage.data.chelsea)",
    "rocket": "SpaceX; public domain (skimage.data.rocket)",
    "brick": "CC0, CC0Textures (skimage.data.brick)",
    "grass": "CC0, DeviantArt linolafett (skimage.data.grass)",
    "gravel": "CC0, CC0Textures (skimage.data.gravel)",
    "text": "public domain (skimage.data.text)",
    "coins": "no known copyright restrictions (skimage.data.coins)",
    "clock": "public domain, Stefan van der Walt (skimage.data.clock)",
    "cell": "CC0 (skimage.data.cell)",
    "horse": "CC0, Andreas Preuss (skimage.data.horse)",
    "hubble_deep_field": "NASA; public domain (skimage.data.hubble_deep_field)",
    "retina": "CC0, Mikael Haggstrom via Wikimedia (skimage.data.retina)",
    "stereo_motorcycle": "Middlebury 2014 stereo benchmark, Scharstein et al.; no licence stated in "
                         "skimage.data.stereo_motorcycle",
    "immunohistochemistry": "no known copyright restrictions (skimage.data.immunohistochemistry)",
    "microaneurysms": "CC0, Andreas Maier (skimage.data.microaneurysms)",
    "china": "CC BY 2.0, danielbuechele on Flickr (sklearn.datasets.load_sample_images().DESCR)",
    "flower": "CC BY 2.0, vultilion on Flickr (sklearn.datasets.load_sample_images().DESCR)",
    "grace_hopper": "matplotlib's sample data, shipped without a licence note (a US Navy photograph)",
}


def _licence(name: str) -> str:
    source = _SAMPLES[name][0]
    if source == "opencv-doc":
        return _OPENCV_LICENCE
    return _LICENCES.get(name, f"no licence stated by {source}")


def sample_image_names() -> list[str]:
    """Names of the bundled images (use them as ``"sample:NAME"``).

    Examples
    --------
    >>> names = sample_image_names()
    >>> "camera" in names and "china" in names and "grace_hopper" in names
    True
    """
    return list(_SAMPLES)


def sample_image_info(name: str) -> dict[str, str]:
    """``{"name", "source", "description", "licence"}`` of a bundled image.

    Examples
    --------
    >>> sample_image_info("baboon")["source"], sample_image_info("chelsea")["licence"]
    ('opencv-doc', 'CC0, Stefan van der Walt (skimage.data.chelsea)')
    """
    if name not in _SAMPLES:
        raise KernelscopeError(suggest(name, _SAMPLES, what="sample image"))
    source, _, description = _SAMPLES[name]
    return {"name": name, "source": source, "description": description, "licence": _licence(name)}


def to_gray(image: np.ndarray) -> np.ndarray:
    """Luminance of an RGB image (BT.709 weights, see the module docstring); grey passes through.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3)

    Returns
    -------
    ndarray of shape (H, W), float64

    Examples
    --------
    >>> to_gray(np.ones((2, 2, 3))).round(12)
    array([[1., 1.],
           [1., 1.]])
    >>> float(to_gray(np.array([[[1.0, 0.0, 0.0]]]))[0, 0])
    0.2125
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[-1] == 3:
        return image @ LUMA_BT709  # (H, W)
    raise KernelscopeError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")


def _to_unit_float(array: np.ndarray, what: str) -> np.ndarray:
    """Integer or bool arrays scaled to [0, 1] by their dtype's range; floats checked."""
    if array.dtype == bool:
        return array.astype(np.float64)
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float64) / 65535.0
    if np.issubdtype(array.dtype, np.integer):  # other integer types: 8-bit range if it fits, else 16
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 65535:
            raise KernelscopeError(
                f"{what}: integer pixel values must lie in [0, 65535] (8 or 16 bits), got [{lo}, {hi}]"
            )
        return array.astype(np.float64) / (255.0 if hi <= 255 else 65535.0)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise KernelscopeError(f"{what}: contains NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 1.0:
            raise KernelscopeError(f"{what}: float pixel values must lie in [0, 1], got [{lo:g}, {hi:g}]")
        return array
    raise KernelscopeError(f"{what}: unsupported pixel type {array.dtype}")


def _finish(array: np.ndarray, what: str, alpha: str) -> np.ndarray:
    """Scale to [0, 1], resolve alpha, squeeze single channels: (H, W) or (H, W, 3) float64."""
    if array.size == 0 or array.ndim < 2 or min(array.shape[:2]) == 0:
        raise KernelscopeError(f"{what}: the image is empty (shape {array.shape})")
    if array.shape[0] * array.shape[1] > _MAX_PIXELS:
        raise KernelscopeError(f"{what}: {array.shape[0]}x{array.shape[1]} pixels is too large "
                               f"(at most {_MAX_PIXELS} pixels)")
    image = _to_unit_float(array, what)
    if image.ndim == 3 and image.shape[-1] in (2, 4):  # grey + alpha, RGB + alpha
        colour, a = image[..., :-1], image[..., -1:]
        image = colour if alpha == "drop" else colour * a + (1.0 - a)  # over white
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[-1] == 3):
        raise KernelscopeError(f"{what}: expected a grey or RGB image, got shape {array.shape}")
    return np.ascontiguousarray(image)


@contextmanager
def open_image(path: str | os.PathLike, what: str | None = None) -> Iterator[Any]:
    """``PIL.Image.open(path)``, refused before any pixel is decoded when it is over :data:`MAX_IMAGE_PIXELS`.

    Pillow reads only the header on open, so the size is known before decoding. Its own
    decompression-bomb guard (an error over about 179 million pixels) is reported as a
    :class:`~kernelscope.errors.KernelscopeError` too; its warning (over about 89 million)
    is not needed, since kernelscope's limit is lower. Every image file kernelscope
    reads is opened here.

    Examples
    --------
    >>> import io, struct, zlib
    >>> def chunk(kind, data):
    ...     return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    >>> header = struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0)  # a PNG that claims 12000x12000 pixels
    >>> png = io.BytesIO(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    >>> with open_image(png, "image file 'big.png'"):
    ...     pass
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: image file 'big.png' is too large: 12000x12000 = 144000000 pixels; at most 50000000 pixels (50 megapixels) are read
    """
    from PIL import Image

    what = what or f"image file {os.fspath(path)!r}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as error:  # same words as the CLI gives for Pillow's guard
            raise KernelscopeError(f"image too large to open safely: {str(error).splitlines()[0]}") from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise KernelscopeError(
                f"{what} is too large: {width}x{height} = {width * height} pixels; at most {MAX_IMAGE_PIXELS} "
                f"pixels ({MAX_IMAGE_PIXELS // 1_000_000} megapixels) are read")
        yield image


def _read_file(path: Path, alpha: str) -> np.ndarray:
    from PIL import ImageOps, UnidentifiedImageError

    what = f"image file {str(path)!r}"
    if not path.exists():
        raise KernelscopeError(f"{what} does not exist")
    if path.is_dir():
        raise KernelscopeError(f"{what} is a directory, not an image file")
    if path.stat().st_size == 0:
        raise KernelscopeError(f"{what} is empty (0 bytes)")
    try:
        with open_image(path, what) as im:
            im.load()  # decodes everything: a truncated file fails here
            fmt = im.format
            im = ImageOps.exif_transpose(im)  # camera photos: apply the EXIF orientation
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif mode == "PA":
                im = im.convert("RGBA")
            array = np.asarray(im)
            if array.dtype.kind == "u" and array.dtype.itemsize == 2:
                array = array.astype(np.uint16)  # big-endian 16-bit -> native
    except KernelscopeError:
        raise
    except UnidentifiedImageError:
        raise KernelscopeError(
            f"{what} is not an image Pillow can read (PNG, JPEG, TIFF, BMP, GIF, WebP, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise KernelscopeError(f"{what} is unreadable or truncated ({reason})") from None
    if mode in ("RGB", "RGBA") and fmt in ("PNG", "TIFF"):
        array = _maybe_16bit_colour(path, array)
    return _finish(array, what, alpha)


def _maybe_16bit_colour(path: Path, array8: np.ndarray) -> np.ndarray:
    """Pillow reads 16-bit colour PNG/TIFF as 8 bits; OpenCV keeps all 16 (BGR order)."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16 or decoded.shape[:2] != array8.shape[:2]:
        return array8
    if decoded.ndim == 3 and decoded.shape[-1] == 3:
        return decoded[..., ::-1]  # BGR -> RGB
    if decoded.ndim == 3 and decoded.shape[-1] == 4:
        return decoded[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    return array8


@lru_cache(maxsize=8)
def _load_sample(name: str) -> np.ndarray:
    source, loader, _ = _SAMPLES[name]
    image = _finish(np.asarray(loader()), f"sample image {name!r} ({source})", "composite")
    image.setflags(write=False)
    return image


def load_image(source: str | os.PathLike, *, gray: bool = False, alpha: str = "composite") -> np.ndarray:
    """Load an image file or a bundled sample as float64 in ``[0, 1]``.

    Parameters
    ----------
    source : str or path
        A file path, or ``"sample:NAME"`` with NAME from :func:`sample_image_names`.
    gray : bool
        Convert colour to luminance (BT.709, see :func:`to_gray`).
    alpha : {"composite", "drop"}
        What to do with an alpha channel: composite over white, or drop it.

    Returns
    -------
    image : ndarray of shape (H, W) or (H, W, 3), float64 in [0, 1]

    Raises
    ------
    KernelscopeError
        Missing, empty, unreadable, truncated or non-image files; unknown sample names
        (with the closest names suggested).

    Examples
    --------
    >>> load_image("sample:camera").shape
    (512, 512)
    >>> img = load_image("sample:astronaut", gray=True)
    >>> img.shape, img.dtype, bool(0.0 <= img.min() and img.max() <= 1.0)
    ((512, 512), dtype('float64'), True)
    """
    if alpha not in ("composite", "drop"):
        raise KernelscopeError(f"alpha must be 'composite' or 'drop', got {alpha!r}")
    if isinstance(source, str) and source.startswith("sample:"):
        name = source[len("sample:"):]
        if name not in _SAMPLES:
            raise KernelscopeError(suggest(name, _SAMPLES, what="sample image"))
        image = np.array(_load_sample(name))  # a writable copy of the cached image
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists() and isinstance(source, str) and source in _SAMPLES:
            raise KernelscopeError(f"image file {source!r} does not exist; did you mean 'sample:{source}'?")
        image = _read_file(path, alpha)
    else:
        raise KernelscopeError(f"image source must be a path or 'sample:NAME', got {type(source).__name__}")
    return to_gray(image) if gray else image


def as_image(image: np.ndarray | str | os.PathLike, *, what: str = "image") -> np.ndarray:
    """An image array ``(H, W)`` or ``(H, W, 3)`` float64 from an array, a path or a sample name.

    Arrays are checked: 2-D, or 3-D with 1, 3 or 4 channels (alpha composited over white).
    ``uint8`` is divided by 255 and ``uint16`` by 65535; other integer types by 255 when
    their values fit in 8 bits, else by 65535; floats must lie in ``[0, 1]``.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4)):
        raise KernelscopeError(f"{what} must have shape (H, W) or (H, W, 3), got {array.shape}")
    return _finish(array, what, "composite")
