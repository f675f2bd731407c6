"""The user's own data: MNIST IDX (raw, gzip), CIFAR-10 python batches, image folders; bad files."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from kernelscope.data import load_dataset
from kernelscope.data.formats import (
    load_cifar10,
    load_image_folder,
    read_idx,
    safe_unpickle,
    write_idx,
)
from kernelscope.errors import KernelscopeError


def _mnist_files(tmp_path, rng, n=40, gz=False, prefix="train"):
    images = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
    labels = (np.arange(n) % 4).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_file_and_directory(tmp_path, rng, gz):
    images, labels = _mnist_files(tmp_path, rng, gz=gz)
    suffix = ".gz" if gz else ""
    d = load_dataset(f"idx:{tmp_path / ('train-images-idx3-ubyte' + suffix)}", test_fraction=0.25)
    x = np.concatenate([d.x_train, d.x_test])
    y = np.concatenate([d.y_train, d.y_test])
    assert x.shape == (40, 1, 6, 5) and d.classes == ["0", "1", "2", "3"]
    # every image comes back with its own label, scaled to [0, 1]
    expected = {bytes(im): int(lab) for im, lab in zip(images, labels, strict=True)}
    for im, lab in zip(x, y, strict=True):
        assert expected[bytes(np.round(im[0] * 255).astype(np.uint8))] == lab
    d2 = load_dataset(f"idx:{tmp_path}")
    assert len(d2.y_train) + len(d2.y_test) == 40


def test_idx_directory_with_test_files_keeps_their_split(tmp_path, rng):
    _mnist_files(tmp_path, rng, n=40)
    _mnist_files(tmp_path, rng, n=12, prefix="t10k")
    d = load_dataset(f"idx:{tmp_path}")
    assert len(d.y_train) == 40 and len(d.y_test) == 12


def test_idx_float_and_header(tmp_path):
    a = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    write_idx(tmp_path / "f.idx", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), a)
    raw = (tmp_path / "f.idx").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0D, 3]) and raw[4:8] == (2).to_bytes(4, "big")


def test_idx_bad_magic(tmp_path):
    (tmp_path / "x-images").write_bytes(b"\x01\x02\x08\x03" + bytes(20))
    with pytest.raises(KernelscopeError, match=r"is not an IDX file: bad magic number 01020803"):
        read_idx(tmp_path / "x-images")


def test_idx_truncated(tmp_path, rng):
    _mnist_files(tmp_path, rng)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(KernelscopeError, match=r"header declares shape \(40, 6, 5\) \(1200 bytes\) but the file "
                                               r"holds 1193 bytes \(truncated\)"):
        load_dataset(f"idx:{path}")


def test_idx_truncated_gzip(tmp_path, rng):
    _mnist_files(tmp_path, rng, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(KernelscopeError, match="is a corrupt or truncated gzip file"):
        read_idx(path)


def test_idx_label_count_mismatch(tmp_path, rng):
    _mnist_files(tmp_path, rng)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    with pytest.raises(KernelscopeError, match=r"label/image count mismatch: .* has 39 labels but .* has 40 images"):
        load_dataset(f"idx:{tmp_path / 'train-images-idx3-ubyte'}")


def test_idx_missing_labels_and_single_class(tmp_path, rng):
    write_idx(tmp_path / "a-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(KernelscopeError, match="labels file .*a-labels-idx1-ubyte.* does not exist"):
        load_dataset(f"idx:{tmp_path / 'a-images-idx3-ubyte'}")
    write_idx(tmp_path / "a-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(KernelscopeError, match="has a single class"):
        load_dataset(f"idx:{tmp_path / 'a-images-idx3-ubyte'}")


def _cifar_dir(tmp_path, rng, n=20, protocol=2):
    d = tmp_path / "cifar"
    d.mkdir()
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 3, n)],
                 b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(n)]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog", b"ship"]}, protocol=protocol))
    return d


def test_cifar10_batches(tmp_path, rng):
    d = _cifar_dir(tmp_path, rng)
    (x, y), (xt, yt), classes = load_cifar10(d)
    assert x.shape == (40, 3, 32, 32) and xt.shape == (20, 3, 32, 32) and classes == ["cat", "dog", "ship"]
    raw = pickle.loads((d / "data_batch_1").read_bytes())
    np.testing.assert_array_equal(x[0], raw[b"data"][0].reshape(3, 32, 32) / np.float32(255))
    ds = load_dataset(f"cifar10:{d}")
    assert len(ds.y_train) == 40 and len(ds.y_test) == 20 and ds.image_shape == (3, 32, 32)
    assert len(ds.mean) == 3


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_refuses_code_in_pickles(tmp_path, rng):
    d = _cifar_dir(tmp_path, rng)
    marker = tmp_path / "pwned"
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil(marker)}
    (d / "data_batch_1").write_bytes(pickle.dumps(payload))
    with pytest.raises(KernelscopeError, match=r"refusing to unpickle posix\.system"):
        load_dataset(f"cifar10:{d}")
    assert not marker.exists()
    with pytest.raises(KernelscopeError, match=r"refusing to unpickle builtins\.eval"):
        safe_unpickle(b"cbuiltins\neval\n(S'1+1'\ntR.")


def test_cifar10_truncated_and_mismatched(tmp_path, rng):
    d = _cifar_dir(tmp_path, rng)
    raw = (d / "test_batch").read_bytes()
    (d / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(KernelscopeError, match="corrupt or truncated pickle"):
        load_dataset(f"cifar10:{d}")
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(KernelscopeError, match=r"label/image count mismatch in .*: 2 labels, 3 images"):
        load_dataset(f"cifar10:{d}")


def test_cifar10_missing_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(KernelscopeError, match="must hold data_batch_\\* and test_batch"):
        load_dataset(f"cifar10:{tmp_path / 'empty'}")


def test_cifar10_gzipped_batch_is_read(tmp_path, rng):
    d = _cifar_dir(tmp_path, rng)
    (d / "data_batch_2").write_bytes(gzip.compress((d / "data_batch_2").read_bytes()))
    (x, _), _, _ = load_cifar10(d)
    assert len(x) == 40


def _folder(tmp_path, rng, classes=("cats", "dogs"), n=3, mode="L", size=(7, 9)):
    from PIL import Image

    root = tmp_path / "imgs"
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            shape = size[::-1] + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_image_folder(tmp_path, rng):
    root = _folder(tmp_path, rng)
    x, y, classes = load_image_folder(root)
    assert x.shape == (6, 1, 9, 7) and classes == ["cats", "dogs"] and y.tolist() == [0, 0, 0, 1, 1, 1]
    from PIL import Image

    np.testing.assert_array_equal(x[4, 0], np.asarray(Image.open(root / "dogs" / "1.png")) / np.float32(255))
    d = load_dataset(f"folder:{root}", test_fraction=0.34)
    assert len(d.y_test) == 2


def test_image_folder_rgb_and_resize(tmp_path, rng):
    root = _folder(tmp_path, rng, mode="RGB")
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "cats" / "small.png")
    x, y, _ = load_image_folder(root)
    assert x.shape == (7, 3, 9, 7)


def test_image_folder_errors(tmp_path, rng):
    root = _folder(tmp_path, rng, classes=("only",))
    with pytest.raises(KernelscopeError, match="must have at least 2 class sub-folders, found 1"):
        load_dataset(f"folder:{root}")
    (root / "empty").mkdir()
    with pytest.raises(KernelscopeError, match="class folder .*empty.* holds no images"):
        load_dataset(f"folder:{root}")
    (root / "empty" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(KernelscopeError, match="cannot read image .*bad.png"):
        load_dataset(f"folder:{root}")
    with pytest.raises(KernelscopeError, match="image folder .*nope.* does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
