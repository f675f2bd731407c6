"""The 'objects' image set: held-out non-face patches, never a training patch of the faces data set."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from kernelscope.data.bundled import faces
from kernelscope.data.faces import HELD_OUT_SEED, held_out_patches, object_patches
from kernelscope.sources import InputSpec, Source


def _keys(images: np.ndarray) -> set[bytes]:
    return {np.ascontiguousarray(image, dtype=np.float32).tobytes() for image in images}


def test_objects_are_disjoint_from_the_training_patches_of_faces():
    training, _, _ = faces()  # what a faces run (split_seed 0) trains and tests on
    src = Source(loader=lambda: None, label="test", kind="module", spec=InputSpec(shape=(1, 25, 25)))
    _, raw, description = src.images("objects")
    assert raw.shape == (660, 1, 25, 25) and raw.dtype == np.float32
    assert len(_keys(raw)) == 660  # no patch twice
    assert _keys(raw).isdisjoint(_keys(training))
    assert raw.reshape(660, -1).std(axis=1).max() > 0.05  # real texture, not blank
    assert description == (f"held-out non-face patches, seed {HELD_OUT_SEED}, none identical to a training "
                           "patch: the faces net's own negative class, not a novel domain")


def test_objects_follow_the_split_seed_of_a_faces_run():
    run = SimpleNamespace(manifest={"dataset": {"name": "faces", "split_seed": HELD_OUT_SEED}})
    src = Source(loader=lambda: None, label="run", kind="run", spec=InputSpec(shape=(1, 25, 25)), run=run)
    _, raw, _ = src.images("objects", limit=50)
    # a run cut its training patches with the held-out seed itself: the set moves to another seed
    assert _keys(raw).isdisjoint(_keys(object_patches(660, seed=HELD_OUT_SEED)))
    np.testing.assert_array_equal(raw, held_out_patches(50, training_seed=HELD_OUT_SEED))
    assert not np.array_equal(raw, held_out_patches(50))


def test_held_out_patches_skip_a_patch_identical_to_a_training_patch(monkeypatch):
    from kernelscope.data import faces as faces_module

    def fake_patches(n, *, seed=0, size=25):  # patch i is constant: i (training seed 0), 2 i (other seeds)
        step = 1.0 if seed == 0 else 2.0
        return np.broadcast_to(step * np.arange(n, dtype=np.float32)[:, None, None, None], (n, 1, size, size)).copy()

    monkeypatch.setattr(faces_module, "object_patches", fake_patches)
    held = faces_module.held_out_patches(5, training_seed=0, n_training=10)
    # 0, 2, 4, 6, 8 are training patches: skipped, and more are cut until five are left
    assert held[:, 0, 0, 0].tolist() == [10.0, 12.0, 14.0, 16.0, 18.0]
