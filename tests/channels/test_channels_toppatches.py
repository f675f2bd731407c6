"""Top-k patches: equal to a brute-force ranking, batch-size independent, memory flat in dataset size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from kernelscope.analysis.hooks import layer_outputs
from kernelscope.analysis.receptive import receptive_field, unit_field_box
from kernelscope.analysis.toppatches import crop_field, top_patches
from kernelscope.errors import KernelscopeError


def _brute_force(net, layer, images, k):
    maps = layer_outputs(net, images, layer)[layer]  # (N, C, h, w): all activations at once
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    maxima = flat.max(axis=2)  # (N, C)
    order = np.argsort(-maxima.T, axis=1, kind="stable")[:, :k]  # (C, k)
    position = flat.argmax(axis=2)  # (N, C)
    return maxima, order, position, maps.shape[-1]


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_matches_brute_force_for_any_batch_size(tiny_net, images, batch_size):
    result = top_patches(tiny_net, "3", images, k=5, batch_size=batch_size)
    maxima, order, position, width = _brute_force(tiny_net, "3", images, 5)
    np.testing.assert_array_equal(result.image_index, order)
    # conv kernels may round differently for another batch size (1 ulp), hence allclose
    np.testing.assert_allclose(result.values, np.take_along_axis(maxima.T, order, axis=1), rtol=1e-6)
    for c in range(3):
        flat = position[order[c], c]
        np.testing.assert_array_equal(result.position[c], np.stack([flat // width, flat % width], axis=1))


def test_crops_are_the_receptive_field_of_the_maximum(tiny_net, images, rng):
    display = rng.random(images.shape).astype(np.float32)
    result = top_patches(tiny_net, "3", images, k=3, display=display)
    field = receptive_field(tiny_net, "3", (1, 12, 12))
    assert result.crops.shape == (3, 3, 1, field.size[0], field.size[1]) == (3, 3, 1, 8, 8)
    for c in range(3):
        for slot in range(3):
            box = unit_field_box(field, *result.position[c, slot])
            expected = crop_field(display[result.image_index[c, slot]], box)
            np.testing.assert_array_equal(result.crops[c, slot], expected)


def test_crop_outside_the_image_is_nan():
    crop = crop_field(np.ones((1, 4, 4), dtype=np.float32), (-2, 1, 2, 5))
    assert np.isnan(crop[0, :2]).all() and np.isnan(crop[0, :, 2:]).all()
    assert (crop[0, 2:, :2] == 1).all()


def test_stream_of_batches_gives_the_same_result(tiny_net, images):
    whole = top_patches(tiny_net, "0", images, k=4)
    streamed = top_patches(tiny_net, "0", (images[i : i + 6] for i in range(0, 20, 6)), k=4)
    np.testing.assert_array_equal(whole.image_index, streamed.image_index)
    np.testing.assert_array_equal(whole.crops, streamed.crops)
    assert streamed.n_images == 20


def _peak_bytes(net, batches):
    tracemalloc.start()
    try:
        top_patches(net, "3", batches, k=8)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_dataset(tiny_net, rng):
    base = rng.standard_normal((64, 1, 12, 12)).astype(np.float32)
    repeats = 10

    def stream(times):
        for _ in range(times):
            for start in range(0, 64, 16):
                yield base[start : start + 16]

    _peak_bytes(tiny_net, stream(1))  # warm-up (first-call allocations)
    once, tenfold = _peak_bytes(tiny_net, stream(1)), _peak_bytes(tiny_net, stream(repeats))
    # Keeping the activations of the 576 extra images would add 576 * 3 * 3 * 3 * 4 bytes (~62 kB) to a
    # peak of ~37 kB; the running top-k is fixed (measured: +3.5 kB of bookkeeping, ~10%).
    extra_activation_bytes = (repeats - 1) * 64 * 3 * 3 * 3 * 4
    assert tenfold - once < 0.1 * extra_activation_bytes, (once, tenfold)


def test_errors(tiny_net, images):
    with pytest.raises(KernelscopeError, match=r"^k must be >= 1, got 0$"):
        top_patches(tiny_net, "3", images, k=0)
    with pytest.raises(KernelscopeError, match=r"^unknown layer 'features.0'"):
        top_patches(tiny_net, "features.0", images)
    with pytest.raises(KernelscopeError, match=r"^the dataset has no images \(0 given\)"):
        top_patches(tiny_net, "3", images[:0])
    with pytest.raises(KernelscopeError, match=r"^display images must match the inputs"):
        top_patches(tiny_net, "3", images, display=images[:3])
    assert torch.is_grad_enabled()


def test_a_field_larger_than_the_image_crops_the_image_not_a_canvas():
    """Deep layers of real networks see more than the input: the crop is the image, no larger."""
    import torch
    from torch import nn

    from kernelscope.analysis.toppatches import top_patches

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 7, padding=3), nn.ReLU(), nn.Conv2d(2, 2, 7, padding=3), nn.ReLU())
    images = np.random.default_rng(0).normal(size=(5, 1, 9, 9)).astype(np.float32)  # the field is 13 px
    result = top_patches(net, "2", images, k=2)
    assert result.field.size == (13, 13)
    assert result.crops.shape == (2, 2, 1, 9, 9)
    for c in range(2):
        for slot in range(2):
            np.testing.assert_array_equal(result.crops[c, slot], images[result.image_index[c, slot]])
