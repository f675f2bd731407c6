"""Large image folders as input (kernelscope.data.folder): lazy listing, corrupt files skipped and
reported, workers=0 and workers=2 giving the same batches in the same order, no arrays held."""

from __future__ import annotations

import io
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kernelscope.data import folder as folder_module
from kernelscope.data.folder import FolderBatch, ImageFolder, UnreadableImage, load_batches
from kernelscope.errors import KernelscopeError
from kernelscope.sources import InputSpec, Source

# fork-started DataLoader workers on a machine with fewer cores than workers: torch's advice, not an error
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def _write(path: Path, array: np.ndarray, mode: str | None = None, **save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, **save) if mode else Image.fromarray(array).save(path, **save)


def _jpeg_bytes(rng) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """39 readable images of mixed sizes, modes and depths in nested folders, 2 corrupt ones, non-images.

    Returns (root, {relative name: expected (C=3 image) colour or None}, relative names of the corrupt files).
    """
    import cv2

    rng = np.random.default_rng(20210216)
    root = tmp_path_factory.mktemp("photos")
    expected: dict[str, tuple[float, float, float] | None] = {}
    for i in range(12):  # uniform colours: after any resize the expected pixel is known
        h, w = 10 + 3 * i, 31 - i
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        name = f"rgb/uniform_{i:02d}.png"
        _write(root / name, np.broadcast_to(colour, (h, w, 3)).copy())
        expected[name] = tuple(colour / 255.0)
    for i in range(6):  # 8-bit grey, and JPEG of both kinds (lossy: no exact colour expected)
        grey = np.uint8(40 * i)
        _write(root / f"grey/g{i}.png", np.full((17, 12 + i), grey, np.uint8))
        expected[f"grey/g{i}.png"] = (grey / 255.0,) * 3
        _write(root / f"jpeg/c{i}.JPG", rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8), quality=95)
        expected[f"jpeg/c{i}.JPG"] = None
        _write(root / f"jpeg/deep/g{i}.jpeg", rng.integers(0, 256, (14, 9 + i), dtype=np.uint8))
        expected[f"jpeg/deep/g{i}.jpeg"] = None
    for i in range(3):  # RGBA (transparent over white), 16-bit grey, 16-bit colour
        rgba = np.zeros((12, 12, 4), np.uint8)
        rgba[..., 0] = 255
        rgba[..., 3] = 0 if i == 0 else 255  # fully transparent -> white; opaque -> red
        _write(root / f"alpha/a{i}.png", rgba)
        expected[f"alpha/a{i}.png"] = (1.0, 1.0, 1.0) if i == 0 else (1.0, 0.0, 0.0)
        value = 1000 + 20000 * i  # not a multiple of 257: 16 bits are really read, not 8
        _write(root / f"deep16/grey{i}.png", np.full((9, 11), value, np.uint16))
        expected[f"deep16/grey{i}.png"] = (value / 65535,) * 3
        colour16 = np.array([value, 65535 - value, 300], np.uint16)
        cv2.imwrite(str(root / f"deep16/rgb{i}.png"), np.broadcast_to(colour16[::-1], (8, 13, 3)).copy())  # BGR
        expected[f"deep16/rgb{i}.png"] = tuple(colour16 / 65535)
    corrupt = ["bad/truncated.jpg", "bad/text.png"]
    (root / "bad").mkdir()
    (root / corrupt[0]).write_bytes(_jpeg_bytes(rng)[:400])
    (root / corrupt[1]).write_text("this is a text file named .png\n")
    (root / "notes.txt").write_text("not an image: not listed")
    (root / ".hidden.png").write_bytes(b"hidden: not listed")
    (root / ".git").mkdir()
    _write(root / ".git/inside.png", np.zeros((4, 4), np.uint8))
    return root, expected, corrupt


def test_lists_every_image_sorted_and_decodes_nothing(photo_folder, monkeypatch):
    root, expected, corrupt = photo_folder
    calls = []
    monkeypatch.setattr(folder_module, "load_image", lambda *a, **k: calls.append(a))
    ds = ImageFolder(root, shape=(3, 16, 16))
    names = [str(Path(ds.path(i)).relative_to(root)) for i in range(len(ds))]
    assert calls == []  # listing reads no file
    assert len(ds) == len(expected) + len(corrupt) == 41
    assert names == sorted(list(expected) + corrupt)
    assert ds.path(-1) == ds.path(len(ds) - 1)
    assert list(ds.paths) == [ds.path(i) for i in range(len(ds))] and ds.paths[1::20] == [ds.path(1), ds.path(21)]
    with pytest.raises(IndexError):
        ds.path(len(ds))


def test_holds_names_not_arrays(tmp_path):
    """The listing's size depends on the file names only, not on the images: 8 px and 200 px give the same."""
    sizes = {}
    for side in (8, 200):
        root = tmp_path / f"side{side}"
        for i in range(20):
            _write(root / f"img_{i:03d}.png", np.full((side, side, 3), i, np.uint8))
        ds = ImageFolder(root, shape=(3, 32, 32))
        ds[0]  # loading an image keeps nothing
        arrays = [v for v in vars(ds).values() if isinstance(v, np.ndarray)]
        assert all(a.dtype == np.int64 and a.shape == (21,) for a in arrays)  # the name offsets only
        sizes[side] = len(pickle.dumps(ds)) - len(str(root))
    assert sizes[8] == sizes[200] < 20 * 40 + 1000


@pytest.mark.parametrize("channels", [3, 1])
def test_images_at_the_shape_with_known_values(photo_folder, channels):
    root, expected, _ = photo_folder
    ds = ImageFolder(root, shape=(channels, 7, 9))
    for i in range(len(ds)):
        name = str(Path(ds.path(i)).relative_to(root))
        if name.startswith("bad/"):
            continue
        x = ds[i]
        assert x.shape == (channels, 7, 9) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        if expected[name] is not None:
            colour = np.array(expected[name])
            want = colour if channels == 3 else [colour @ [0.2125, 0.7154, 0.0721]]  # BT.709 luminance
            np.testing.assert_allclose(x.mean(axis=(1, 2)), want, atol=2e-6, err_msg=name)
            np.testing.assert_allclose(x.std(axis=(1, 2)), 0.0, atol=2e-6, err_msg=name)


def test_without_a_shape_images_keep_size_and_channels(photo_folder):
    root, _, _ = photo_folder
    ds = ImageFolder(root)
    grey, rgb = ds[ds_index(ds, "grey/g3.png")], ds[ds_index(ds, "rgb/uniform_02.png")]
    assert grey.shape == (1, 17, 15) and rgb.shape == (3, 16, 29)
    with pytest.raises(KernelscopeError, match=r"different shapes, .*; give a shape \(C, H, W\)"):
        list(load_batches(ds, np.arange(len(ds)), batch_size=50))


def ds_index(ds: ImageFolder, name: str) -> int:
    return next(i for i in range(len(ds)) if ds.path(i).endswith(name))


def test_corrupt_files_raise_unreadable_with_their_path(photo_folder):
    root, _, corrupt = photo_folder
    ds = ImageFolder(root, shape=(3, 8, 8))
    for name, reason in zip(corrupt, ["unreadable or truncated", "not an image"], strict=True):
        with pytest.raises(UnreadableImage, match=reason) as caught:
            ds[ds_index(ds, name)]
        assert caught.value.path == str(root / name) and isinstance(caught.value, KernelscopeError)
        again = pickle.loads(pickle.dumps(caught.value))  # what a worker sends back
        assert (again.path, again.reason, str(again)) == (caught.value.path, caught.value.reason, str(caught.value))


def _run(ds, order, workers, batch_size=5, normalise=None):
    return list(load_batches(ds, order, batch_size=batch_size, workers=workers, normalise=normalise))


def test_workers_give_the_same_batches_in_order_and_skip_corrupt_files(photo_folder, rng):
    root, _, corrupt = photo_folder
    ds = ImageFolder(root, shape=(3, 12, 10))
    bad = {ds_index(ds, name) for name in corrupt}
    others = rng.permutation([i for i in range(len(ds)) if i not in bad])[:31]
    order = np.array([*sorted(bad), *others])  # a rank's share, in its own order; both corrupt files in batch 0

    def normalise(raw):
        return (raw - 0.5) / 0.25

    serial, parallel = [], []
    for workers, out in ((0, serial), (2, parallel)):
        for batch in load_batches(ds, order, batch_size=5, workers=workers, normalise=normalise):
            out.append(batch)
            assert len(multiprocessing.active_children()) == workers  # no subprocess at 0, two real ones at 2
    assert multiprocessing.active_children() == []  # the workers are gone when the loop ends
    assert len(serial) == len(parallel) == 7  # ceil(33 / 5): one batch per batch_size indices, none merged
    for a, b in zip(serial, parallel, strict=True):
        assert isinstance(a, FolderBatch)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.raw, b.raw)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        assert a.skipped == b.skipped
        assert a.indices.dtype == np.int64 and a.raw.dtype == a.inputs.dtype == np.float32
        np.testing.assert_allclose(a.inputs, (a.raw - 0.5) / 0.25, rtol=1e-6)
    loaded = np.concatenate([b.indices for b in serial])
    np.testing.assert_array_equal(loaded, [i for i in order if i not in bad])  # order kept, corrupt left out
    assert len(serial[0].indices) == 3  # the first batch is shorter by the two skipped files
    skipped = [s for b in serial for s in b.skipped]
    assert sorted((i, p) for i, p, _ in skipped) == sorted((i, ds.path(i)) for i in bad)
    for (_, path, reason) in skipped:
        assert str(root) in path and reason and "\n" not in reason
    for b in serial:  # every image equals the data set's own item
        for i, x in zip(b.indices, b.raw, strict=True):
            np.testing.assert_array_equal(x, ds[i])


def test_loading_in_process_leaves_the_models_threads_alone(photo_folder):
    import torch

    ds = ImageFolder(photo_folder[0], shape=(3, 8, 8))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in load_batches(ds, np.arange(6), batch_size=2):
            assert torch.get_num_threads() == 2  # one thread while loading, the caller's between batches
    finally:
        torch.set_num_threads(threads)


def test_a_batch_of_only_corrupt_files_is_empty_not_missing(photo_folder):
    root, _, corrupt = photo_folder
    ds = ImageFolder(root, shape=(1, 6, 6))
    bad = [ds_index(ds, name) for name in corrupt]
    batches = _run(ds, [*bad, 0], 0, batch_size=2)
    assert [len(b.indices) for b in batches] == [0, 1]
    assert batches[0].raw.shape == batches[0].inputs.shape == (0, 1, 6, 6)
    assert [i for i, _, _ in batches[0].skipped] == bad


def test_source_image_folder_uses_the_input_spec(photo_folder):
    root, expected, _ = photo_folder
    spec = InputSpec((1, 5, 6), [0.5], [0.25])
    src = Source(lambda: None, "test source", "module", spec)
    ds = src.image_folder(root)
    assert isinstance(ds, ImageFolder) and ds.image_shape == (1, 5, 6)
    assert not hasattr(ds, "shape")  # not an array: duck-typed array code must not take it for one
    i = ds_index(ds, "grey/g2.png")
    batch = next(load_batches(ds, [i], batch_size=4, normalise=src.normalise))
    grey = expected["grey/g2.png"][0]
    np.testing.assert_allclose(batch.raw, grey, atol=1e-6)
    np.testing.assert_allclose(batch.inputs, (grey - 0.5) / 0.25, atol=1e-5)


def test_a_model_of_unknown_size_gets_its_channels_and_images_their_own_size(tmp_path):
    from torch import nn

    _write(tmp_path / "a_grey.png", np.full((6, 7), 51, np.uint8))
    _write(tmp_path / "b_rgb.png", np.broadcast_to(np.uint8([255, 0, 102]), (6, 7, 3)).copy())
    src = Source(lambda: nn.Sequential(nn.Conv2d(3, 2, 3)), "a module", "module", InputSpec())
    ds = src.image_folder(tmp_path)
    assert ds.image_shape == (3, None, None)
    (batch,) = load_batches(ds, [0, 1], batch_size=2)
    np.testing.assert_allclose(batch.raw[:, :, 0, 0], [[0.2, 0.2, 0.2], [1.0, 0.0, 0.4]], atol=1e-6)
    assert batch.raw.shape == (2, 3, 6, 7)
    with pytest.raises(KernelscopeError, match=r"shape must be \(C, H, W\) or \(C, None, None\)"):
        ImageFolder(tmp_path, shape=(3, 5, None))


def test_pickles_for_spawned_workers(photo_folder):
    root, _, _ = photo_folder
    ds = ImageFolder(root, shape=(3, 8, 8))
    copy = pickle.loads(pickle.dumps(ds))
    assert [copy.path(i) for i in range(len(copy))] == [ds.path(i) for i in range(len(ds))]
    i = ds_index(ds, "rgb/uniform_03.png")
    np.testing.assert_array_equal(copy[i], ds[i])


def test_empty_and_missing_folders_say_what_to_do(tmp_path):
    with pytest.raises(KernelscopeError, match=r"holds no image files \(\.png .*searched with its sub-folders\)"
                                               r"; give a folder of images$"):
        ImageFolder(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("x")
    with pytest.raises(KernelscopeError, match=r"holds 1 other file, e\.g\. 'sub/readme\.txt'"):
        ImageFolder(tmp_path)
    with pytest.raises(KernelscopeError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere")
    with pytest.raises(KernelscopeError, match="is a file, not a folder"):
        ImageFolder(tmp_path / "sub" / "readme.txt")


def test_bad_arguments_are_one_line_errors(photo_folder):
    root, _, _ = photo_folder
    with pytest.raises(KernelscopeError, match=r"shape must be \(C, H, W\) or \(C, None, None\) with C 1 or 3"):
        ImageFolder(root, shape=(4, 8, 8))
    ds = ImageFolder(root, shape=(3, 8, 8))
    for kwargs, message in [({"indices": [0, len(ds)]}, r"must lie in \[0, 41\)"),
                            ({"indices": [[0, 1]]}, "1-D array of integers"),
                            ({"indices": [0.5]}, "1-D array of integers"),
                            ({"indices": [0], "batch_size": 0}, "batch_size must be >= 1"),
                            ({"indices": [0], "workers": -1}, "workers must be >= 0")]:
        kwargs = {"batch_size": 4, **kwargs}
        with pytest.raises(KernelscopeError, match=message):
            list(load_batches(ds, kwargs.pop("indices"), **kwargs))
    assert list(load_batches(ds, np.array([], dtype=np.int64), batch_size=4)) == []  # a rank with no share


def test_a_failing_prepare_in_a_worker_is_one_line(photo_folder):
    root, _, _ = photo_folder
    ds = ImageFolder(root, shape=(3, 8, 8), prepare=_refuse)
    with pytest.raises(KernelscopeError, match=r"^prepare refused the image$"):
        list(load_batches(ds, [0, 1], batch_size=2, workers=1))


def _refuse(x):
    raise KernelscopeError("prepare refused the image")
