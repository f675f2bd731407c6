"""Network Dissection: the streaming histogram, IoU against a brute-force reference, nulls and masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import resize
from torch import nn

from kernelscope.analysis.dissect import (
    Permutations,
    StreamingHistogram,
    chance_iou,
    dissect,
    dissect_layer,
)
from kernelscope.analysis.hooks import layer_outputs
from kernelscope.data.face_masks import check_masks, face_part_masks, load_masks, template_masks
from kernelscope.errors import KernelscopeError


def test_histogram_growth_keeps_every_count(rng):
    h = StreamingHistogram(2, n_bins=64)
    chunks = [rng.normal(0, scale, (2, 500)) for scale in (0.01, 1.0, 30.0)]
    chunks.append(rng.normal(-500, 1, (2, 50)))  # far below everything so far: the top must stay put
    for chunk in chunks:
        h.add(chunk)
    data = np.concatenate(chunks, axis=1)
    assert h.counts.sum(axis=1).tolist() == [1550, 1550]
    for c in range(2):  # the merged counts equal a histogram built directly on the final bins
        edges = h.lo[c] + np.arange(65) * h.width[c]
        direct = np.histogram(np.clip(data[c], edges[0], edges[-1] - 1e-9), bins=edges)[0]
        np.testing.assert_array_equal(h.counts[c], direct)


def test_histogram_quantile_has_the_right_rank(rng):
    h = StreamingHistogram(3)
    data = [rng.standard_normal((3, 4000)) * s for s in (0.1, 1.0, 5.0)]
    for chunk in data:
        h.add(chunk)
    values = np.concatenate(data, axis=1)
    t = h.upper_quantile(0.005)
    assert ((values > t[:, None]).sum(axis=1) == 60).all()  # 0.5% of 12,000, exactly
    ordered = -np.sort(-values, axis=1)
    assert (ordered[:, 60] <= t).all() and (t < ordered[:, 59]).all()


def _reference_iou(net, layer, images, masks):
    """Brute force: all activations in memory, exact quantile, skimage's bilinear upsampling."""
    acts = layer_outputs(net, images, layer)[layer].astype(np.float64)  # (N, C, h, w)
    n, c = acts.shape[:2]
    thresholds = np.quantile(acts.transpose(1, 0, 2, 3).reshape(c, -1), 0.995, axis=1)
    up = np.stack([[resize(acts[i, j], masks.shape[1:], order=1, mode="edge", anti_aliasing=False)
                    for j in range(c)] for i in range(n)])  # (N, C, Hm, Wm)
    fire = up > thresholds[None, :, None, None]
    inter = (fire & masks[:, None]).sum(axis=(0, 2, 3))
    union = (fire | masks[:, None]).sum(axis=(0, 2, 3))
    return inter / union, fire.mean(axis=(0, 2, 3))


@pytest.mark.parametrize("layer", ["0", "3"])
def test_iou_matches_a_brute_force_reference(rng, layer):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(3, 2, 3, padding=1))
    with torch.no_grad():  # channel 0 of each conv sums its window: a bright-blob detector; the rest random
        net[0].weight[0] = net[0].weight[0].abs()
        net[3].weight[0] = net[3].weight[0].abs()
    masks = np.zeros((60, 12, 12), dtype=bool)
    masks[:, 4:6, 3:6] = True
    masks[::3] = np.roll(masks[::3], 3, axis=2)
    images = (rng.standard_normal((60, 1, 12, 12)) + 3.0 * masks[:, None]).astype(np.float32)
    result = dissect(net, layer, images, {"blob": masks}, n_permutations=3)
    iou, fire_fraction = _reference_iou(net, layer, images, masks)
    got = result.trained["concepts"]["blob"]["iou"]
    # thresholds come from a 4096-bin histogram: a few pixels near the threshold may flip
    np.testing.assert_allclose(got, iou, atol=0.01)
    np.testing.assert_allclose(result.trained["fire_fraction"], fire_fraction, atol=0.002)
    assert iou.max() > 0.02  # the comparison is not between zeros


def _eye_detector():
    """Channel 0 copies the image (fires on bright pixels); channel 1 is its negative."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net[0].bias.zero_()
    return net


def test_a_hand_set_detector_is_found_and_beats_its_nulls(rng):
    n = 120
    masks = np.zeros((n, 16, 16), dtype=bool)
    rows, cols = rng.integers(2, 14, n), rng.integers(2, 14, n)
    masks[np.arange(n), rows, cols] = True  # one "eye" pixel per image, somewhere different each time
    images = (rng.random((n, 1, 16, 16)) * 0.5 + 2.0 * masks[:, None]).astype(np.float32)
    result = dissect(_eye_detector(), "0", images, {"eye": masks}, n_permutations=20)
    eye = result.trained["concepts"]["eye"]
    # 0.5% of 30,720 pixels = 153.6 fire: all 120 eye pixels (>= 2) and ~34 of the brightest others (< 0.5)
    fired = result.trained["fire_fraction"][0] * 30720
    assert abs(fired - 153.6) <= 4  # the threshold is interpolated inside a histogram bin
    assert eye["iou"][0] == pytest.approx(120 / fired, rel=1e-12)  # intersection 120, union = fired
    assert eye["iou"][1] == 0.0
    assert eye["null_p95"][0] < 0.05  # shuffled masks land elsewhere
    assert eye["chance"][0] == pytest.approx(chance_iou(np.array([154 / 30720]), 120 / 30720)[0], rel=0.02)
    assert result.detectors() == {"eye": [0]}


def test_init_control_is_scored_the_same_way(rng):
    masks = {"m": rng.random((30, 8, 8)) > 0.8}
    images = rng.random((30, 1, 8, 8)).astype(np.float32)
    torch.manual_seed(1)
    init = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1))
    result = dissect(_eye_detector(), "0", images, masks, init_model=init, n_permutations=2)
    assert set(result.init["concepts"]["m"]) == set(result.trained["concepts"]["m"])
    rows = result.rows()
    assert len(rows) == 2 and rows[0]["init_iou"] is not None
    assert result.to_dict()["summary"]["init"]["m"]["n_detectors"] >= 0


def test_chance_iou():
    np.testing.assert_allclose(chance_iou(np.array([0.0, 1.0, 0.1]), 0.2), [0.0, 0.2, 0.02 / 0.28])


def test_mask_checks():
    with pytest.raises(KernelscopeError, match=r"^masks: 'eyes' has 3 masks but there are 2 images$"):
        check_masks({"eyes": np.zeros((3, 4, 4))}, 2, (4, 4))
    with pytest.raises(KernelscopeError,
                       match=r"^masks: 'eyes' masks are 5x4 but the images are 4x4; give masks of the image size$"):
        check_masks({"eyes": np.zeros((2, 5, 4))}, 2, (4, 4))
    with pytest.raises(KernelscopeError, match=r"^masks: no concept given"):
        dissect(_eye_detector(), "0", np.zeros((2, 1, 4, 4), np.float32), {})


def test_user_masks_from_npz_and_png_folders(tmp_path):
    from PIL import Image

    arrays = {"eyes": np.zeros((2, 4, 4), dtype=bool), "mouth": np.ones((2, 4, 4), dtype=bool)}
    np.savez(tmp_path / "m.npz", **arrays)
    loaded = load_masks(tmp_path / "m.npz")
    assert sorted(loaded) == ["eyes", "mouth"] and loaded["mouth"].all()
    (tmp_path / "dir" / "eyes").mkdir(parents=True)
    for i in range(3):
        image = np.zeros((4, 4), dtype=np.uint8)
        image[i, i] = 255
        Image.fromarray(image).save(tmp_path / "dir" / "eyes" / f"{i:02d}.png")
    folder = load_masks(tmp_path / "dir")
    assert folder["eyes"].shape == (3, 4, 4) and folder["eyes"][2, 2, 2] and folder["eyes"].sum() == 3
    with pytest.raises(KernelscopeError, match="does not exist"):
        load_masks(tmp_path / "missing.npz")


def test_face_masks_from_cascades_and_template_fallback():
    from kernelscope.data.faces import lfw_faces

    faces = lfw_faces()[:12]
    blank = np.full((2, 1, 25, 25), 0.5, dtype=np.float32)  # no eye anywhere: the template must step in
    result = face_part_masks(np.concatenate([faces, blank]))
    assert result.counts["eyes"]["cascade"] >= 10 and result.counts["mouth"]["cascade"] >= 9
    assert list(result.source["eyes"][-2:]) == ["template", "template"]
    np.testing.assert_array_equal(result.masks["eyes"][-1], template_masks(1)["eyes"][0])
    eyes = result.masks["eyes"][:12][result.source["eyes"][:12] == "cascade"]
    mouth = result.masks["mouth"][:12][result.source["mouth"][:12] == "cascade"]
    eye_rows = np.nonzero(eyes.any(axis=(0, 2)))[0]
    mouth_rows = np.nonzero(mouth.any(axis=(0, 2)))[0]
    assert 5 <= eye_rows.mean() <= 11 and 16 <= mouth_rows.mean() <= 21  # eyes above the mouth, as aligned


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000])
def test_computed_permutations_are_bijections(n):
    perms = Permutations(n, 3, seed=5)
    rows = perms.rows(0, n)
    for row in rows:
        assert sorted(row.tolist()) == list(range(n))
    if n >= 100:  # shuffled, not shifted: few fixed points, and different from each other
        assert (rows[1] == np.arange(n)).mean() < 0.05 and (rows[1] != rows[2]).mean() > 0.9
    if n >= 5:  # evaluated on demand, consistently
        np.testing.assert_array_equal(perms.rows(3, 2), rows[:, 3:5])
    with pytest.raises(KernelscopeError, match="must lie in"):
        perms.rows(n, 1)


def test_unrepresentative_first_batch_falls_back_to_an_exact_second_pass(rng):
    n = 256
    masks = np.zeros((n, 12, 12), dtype=bool)
    masks[:, 4:6, 3:6] = True
    images = (rng.standard_normal((n, 1, 12, 12)) + 3.0 * masks[:, None]).astype(np.float32)
    images[:16] += 50.0  # a bright first batch: the top 5% of it (115 values) are fewer than the
    net = _eye_detector()  # top 0.5% of all (184), so the threshold lies below its floor
    batches = [images[i : i + 16] for i in range(0, n, 16)]  # a list: re-iterable
    result = dissect_layer(net, "0", batches, {"blob": masks}, n_permutations=2)
    assert result["passes"] == 2
    iou, fire_fraction = _reference_iou(net, "0", images, masks)
    np.testing.assert_allclose(result["concepts"]["blob"]["iou"], iou, atol=0.01)
    np.testing.assert_allclose(result["fire_fraction"], fire_fraction, atol=0.002)
    ordinary = dissect_layer(net, "0", images[16:], {"blob": masks[16:]}, n_permutations=2)
    assert ordinary["passes"] == 1
