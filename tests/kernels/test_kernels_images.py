"""load_image: every format and bit depth written to tmp_path, bundled samples, bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from kernelscope.data.images import (
    as_image,
    load_image,
    sample_image_info,
    sample_image_names,
    to_gray,
)
from kernelscope.errors import KernelscopeError


@pytest.fixture
def grey8(rng) -> np.ndarray:
    return rng.integers(0, 256, (6, 9), dtype=np.uint8)


@pytest.fixture
def rgb8(rng) -> np.ndarray:
    return rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["png", "tif", "bmp"])
def test_lossless_8bit_grey_and_colour_roundtrip_exactly(tmp_path, grey8, rgb8, suffix):
    Image.fromarray(grey8).save(tmp_path / f"g.{suffix}")
    Image.fromarray(rgb8).save(tmp_path / f"c.{suffix}")
    grey = load_image(tmp_path / f"g.{suffix}")
    colour = load_image(str(tmp_path / f"c.{suffix}"))
    assert grey.dtype == np.float64 and grey.shape == (6, 9)
    np.testing.assert_array_equal(grey, grey8 / 255.0)
    np.testing.assert_array_equal(colour, rgb8 / 255.0)
    np.testing.assert_allclose(load_image(tmp_path / f"c.{suffix}", gray=True), to_gray(rgb8 / 255.0))


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16bit_grey_and_colour_keep_full_depth(tmp_path, rng, suffix):
    grey16 = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / f"g.{suffix}"), grey16)
    assert cv2.imwrite(str(tmp_path / f"c.{suffix}"), rgb16[..., ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(load_image(tmp_path / f"g.{suffix}"), grey16 / 65535.0)
    np.testing.assert_array_equal(load_image(tmp_path / f"c.{suffix}"), rgb16 / 65535.0)


def test_16bit_rgba_png(tmp_path, rng):
    rgba16 = rng.integers(0, 65536, (4, 5, 4), dtype=np.uint16)
    assert cv2.imwrite(str(tmp_path / "a.png"), rgba16[..., [2, 1, 0, 3]])
    expected = rgba16[..., :3] / 65535.0
    np.testing.assert_array_equal(load_image(tmp_path / "a.png", alpha="drop"), expected)


def test_alpha_is_composited_over_white_or_dropped(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red-ish everywhere
    rgba[0, 0, 3] = 255  # opaque
    rgba[0, 1, 3] = 0  # fully transparent
    rgba[1, :, 3] = 51  # 20% opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    composite = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(composite[0, 0], [200 / 255, 0, 0])
    np.testing.assert_allclose(composite[0, 1], [1, 1, 1])  # transparent -> white
    np.testing.assert_allclose(composite[1, 0], 0.2 * np.array([200 / 255, 0, 0]) + 0.8)
    np.testing.assert_allclose(load_image(tmp_path / "a.png", alpha="drop")[0, 1], [200 / 255, 0, 0])
    la = np.stack([np.full((2, 2), 100, np.uint8), np.full((2, 2), 0, np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(load_image(tmp_path / "la.png"), 1.0)
    assert load_image(tmp_path / "la.png", alpha="drop").shape == (2, 2)


def test_palette_bilevel_and_jpeg(tmp_path, rgb8):
    Image.fromarray(rgb8).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (6, 9, 3)
    bits = np.zeros((4, 4), bool)
    bits[1:3] = True
    Image.fromarray(bits).save(tmp_path / "b.png")
    np.testing.assert_array_equal(load_image(tmp_path / "b.png"), bits.astype(float))
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    Image.fromarray(np.stack([smooth] * 3, -1)).save(tmp_path / "c.jpg", quality=95)
    loaded = load_image(tmp_path / "c.jpg")
    assert loaded.shape == (32, 32, 3)
    assert np.abs(loaded - smooth[..., None] / 255.0).max() < 0.05  # lossy, but close


def test_bundled_samples_all_load_offline():
    names = sample_image_names()
    assert {"astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "text",
            "china", "flower", "grace_hopper", "stereo_motorcycle"} <= set(names)
    for name in names:
        image = load_image(f"sample:{name}")
        assert image.dtype == np.float64 and image.ndim in (2, 3), name
        assert image.shape[0] >= 100 and image.shape[1] >= 100, name
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.02, name
        assert sample_image_info(name)["source"] in ("scikit-image", "scikit-learn", "matplotlib", "opencv-doc")
    assert load_image("sample:stereo_motorcycle").shape == (500, 741, 3)  # the left image
    assert load_image("sample:logo").shape[-1] == 3  # RGBA composited


def test_sample_is_a_private_copy():
    first = load_image("sample:camera")
    first[:] = 0
    assert load_image("sample:camera").max() > 0.9


def test_luminance_is_bt709_as_skimage():
    from skimage.color import rgb2gray

    rgb = np.random.default_rng(1).random((4, 5, 3))
    np.testing.assert_allclose(to_gray(rgb), rgb2gray(rgb), atol=1e-15)


def test_as_image_accepts_arrays_and_scales_integers():
    np.testing.assert_array_equal(as_image(np.array([[0, 255]], dtype=np.uint8)), [[0.0, 1.0]])
    np.testing.assert_array_equal(as_image(np.array([[0, 65535]], dtype=np.uint16)), [[0.0, 1.0]])
    np.testing.assert_array_equal(as_image(np.array([[0, 51]], dtype=np.int64)), [[0.0, 0.2]])
    assert as_image(np.zeros((3, 4, 1))).shape == (3, 4)


def _bad(tmp_path, rgb8):
    """(path, message) for each kind of bad file."""
    Image.fromarray(rgb8).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    big = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "good.jpg", quality=90)
    jpeg = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "notes.png").write_text("this is not an image\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    return [
        ("trunc.png", r"image file '.*trunc.png' is unreadable or truncated"),
        ("trunc.jpg", r"image file '.*trunc.jpg' is unreadable or truncated"),
        ("notes.png", r"image file '.*notes.png' is not an image Pillow can read \(PNG, JPEG, TIFF"),
        ("empty.png", r"image file '.*empty.png' is empty \(0 bytes\)"),
        ("folder", r"image file '.*folder' is a directory, not an image file"),
        ("missing.png", r"image file '.*missing.png' does not exist"),
    ]


def test_bad_files_give_one_line_errors(tmp_path, rgb8):
    for name, message in _bad(tmp_path, rgb8):
        with pytest.raises(KernelscopeError, match=message) as caught:
            load_image(tmp_path / name)
        assert "\n" not in str(caught.value), name


def test_bad_names_and_options():
    with pytest.raises(KernelscopeError, match=r"unknown sample image 'camra'; did you mean 'camera'"):
        load_image("sample:camra")
    with pytest.raises(KernelscopeError, match=r"image file 'camera' does not exist; did you mean 'sample:camera'\?"):
        load_image("camera")
    with pytest.raises(KernelscopeError, match=r"alpha must be 'composite' or 'drop', got 'keep'"):
        load_image("sample:camera", alpha="keep")
    with pytest.raises(KernelscopeError, match=r"image source must be a path or 'sample:NAME', got int"):
        load_image(3)  # type: ignore[arg-type]
    with pytest.raises(KernelscopeError, match=r"unknown sample image 'lena'"):
        sample_image_info("lena")


def test_float_tiff_outside_unit_range_is_refused(tmp_path):
    Image.fromarray(np.full((3, 3), 2.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(KernelscopeError, match=r"float pixel values must lie in \[0, 1\], got \[2.5, 2.5\]"):
        load_image(tmp_path / "f.tif")
    Image.fromarray(np.full((3, 3), 0.25, np.float32)).save(tmp_path / "ok.tif")
    np.testing.assert_allclose(load_image(tmp_path / "ok.tif"), 0.25)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[0, 0] = 255  # a white pixel at the top left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(pixels).save(tmp_path / "phone.png", exif=exif.tobytes())
    loaded = load_image(tmp_path / "phone.png")
    assert loaded.shape == (6, 4, 3)  # upright: width and height swapped
    assert loaded[0, -1].min() > 0.9  # the stored top-left pixel is now at the top right
