"""Network Dissection: the streaming histogram, IoU against a brute-force reference, nulls and masks;
the pass's shortcuts (sparse upsampling, levels, waiting batches) against a pass without them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import resize
from torch import nn

import kernelscope.analysis.dissect as dissect_module
from kernelscope.analysis.bilinear import _Bilinear, bilinear_axis
from kernelscope.analysis.dissect import chance_iou, dissect, dissect_layer
from kernelscope.analysis.hooks import layer_outputs
from kernelscope.analysis.sketches import Permutations, StreamingHistogram, _sorted_quantiles, _Tail
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
    assert result.detectors(gated=True) == {"eye": [0]}  # its IoU clears its own null's p95 too
    assert result.detector_counts() == {"eye": {"iou": 1, "gated": 1}}


def test_a_detector_of_where_masks_usually_are_is_not_gated(rng):
    # the eye is always at the same pixel and so is the brightest pixel: IoU ~0.8 > 0.04, yet the
    # masks shuffled across images land on the same pixel, so the permutation null reaches it too
    n = 120
    masks = np.zeros((n, 16, 16), dtype=bool)
    masks[:, 7, 7] = True
    images = (rng.random((n, 1, 16, 16)) * 0.5 + 2.0 * masks[:, None]).astype(np.float32)
    result = dissect(_eye_detector(), "0", images, {"eye": masks}, n_permutations=10)
    eye = result.trained["concepts"]["eye"]
    assert eye["iou"][0] > 0.5 and eye["null_p95"][0] >= eye["iou"][0] - 1e-9
    assert result.detectors() == {"eye": [0]}
    assert result.detectors(gated=True) == {"eye": []}
    summary = result.to_dict()["summary"]["trained"]["eye"]
    assert (summary["n_detectors"], summary["n_detectors_gated"]) == (1, 0)
    assert [row["detector_gated"] for row in result.rows()] == [False, False]
    # without permutations there is no null: nothing passes the gate
    assert dissect(_eye_detector(), "0", images, {"eye": masks}, n_permutations=0).detectors(gated=True) == {"eye": []}


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
    assert result["passes"] == 3  # range from the first pass, histogram over it, exact count
    iou, fire_fraction = _reference_iou(net, "0", images, masks)
    np.testing.assert_allclose(result["concepts"]["blob"]["iou"], iou, atol=0.01)
    np.testing.assert_allclose(result["fire_fraction"], fire_fraction, atol=0.002)
    ordinary = dissect_layer(net, "0", images[16:], {"blob": masks[16:]}, n_permutations=2)
    assert ordinary["passes"] == 1


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_permutation_rows_are_each_permutation_applied(n):
    perms = Permutations(n, 4, seed=3)
    rows = perms.rows(n // 3, n - n // 3)  # all permutations at once, a range in the middle
    for k in range(4):
        np.testing.assert_array_equal(rows[1 + k], perms.apply(k, np.arange(n // 3, n)))


# --- the pass's shortcuts -------------------------------------------------------------------------

BILINEAR_CASES = [((3, 16, 12, 12), (25, 25)), ((2, 8, 8, 8), (48, 48)), ((2, 5, 7, 9), (20, 31)),
                  ((2, 3, 20, 20), (12, 12)), ((2, 3, 6, 6), (6, 6)), ((2, 3, 1, 5), (4, 9))]


@pytest.mark.parametrize(("shape", "size"), BILINEAR_CASES)
def test_bilinear_upsampling_is_torchs(rng, shape, size):
    x = (rng.standard_normal(shape) * rng.choice([0.01, 1.0, 100.0], shape)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                                           align_corners=False).numpy()
    got = _Bilinear(shape[2:], size).dense(x)
    # float32 arithmetic in torch's order; where torch's compiled kernel rounds differently
    # (another code path, no fused multiply-add) the last bit may differ
    scale = np.abs(x).reshape(*shape[:2], -1).max(axis=2)[:, :, None, None]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * scale.max())
    i0, i1, l0, l1 = bilinear_axis(shape[2], size[0])
    assert i0.min() >= 0 and i1.max() <= shape[2] - 1 and np.all(l0 + l1 == 1)


@pytest.mark.parametrize(("shape", "size"), BILINEAR_CASES)
def test_upsampled_values_above_a_level_are_all_found(rng, shape, size):
    """Only cells with a source near the level are evaluated: no value above it may be missed."""
    x = (rng.standard_normal(shape) * rng.choice([0.01, 1.0, 100.0], shape)).astype(np.float32)
    x[0] = np.maximum(x[0], 0)  # zeros: a level of 0 is a strict one
    up = _Bilinear(shape[2:], size)
    dense = up.dense(x).reshape(*shape[:2], -1)  # (B, C, P)
    per_channel = dense.transpose(1, 0, 2).reshape(shape[1], -1)
    for level in (np.quantile(per_channel, 0.9, axis=1), per_channel.max(axis=1), np.zeros(shape[1]),
                  per_channel[:, 17].astype(np.float64)):  # the last: a level equal to some values
        channel, image, pixel, value = up.above(x, level)
        got = np.sort((channel * shape[0] + image) * dense.shape[2] + pixel)
        n, c, p = np.nonzero(dense > level[None, :, None])
        np.testing.assert_array_equal(got, np.sort((c * shape[0] + n) * dense.shape[2] + p))
        np.testing.assert_array_equal(value, dense[image, channel, pixel])


def test_bins_and_quantiles_are_numpys(rng):
    first = np.concatenate([rng.standard_normal((2, 3000)), np.round(rng.standard_normal((2, 3000)), 1)],
                           axis=1).astype(np.float32)  # ties too
    tail = _Tail(first, rows=1, fraction=0.05, n_bins=100)
    for c in range(2):
        above = first[c][first[c] > tail.floor[c]]
        want = np.quantile(above, np.linspace(0, 1, 100, endpoint=False))
        want[0] = tail.floor[c]
        np.testing.assert_array_equal(tail.edges[c], want)
        np.testing.assert_array_equal(_sorted_quantiles(np.sort(above), np.array([0.0, 0.37, 0.5, 1.0])),
                                      np.quantile(above, [0.0, 0.37, 0.5, 1.0]))
    values = np.concatenate([first.ravel(), tail.edges.ravel(), np.nextafter(tail.edges.ravel(), -np.inf),
                             [-np.inf, np.inf]]).astype(np.float32)
    channel = rng.integers(0, 2, values.size)
    want = [np.clip(np.searchsorted(tail.edges[c], v, side="right") - 1, 0, 99) for c, v in zip(channel, values, strict=True)]
    np.testing.assert_array_equal(tail.keys(values, channel), channel * 100 + np.array(want))


class _Indexable:
    """Masks that can only be indexed by an index array (as a lazily tiled dataset's)."""

    def __init__(self, masks):
        self.masks, self.shape = masks, masks.shape

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, index):
        return self.masks[np.asarray(index)]


def _reference_pass(net, layer, images, masks, n_permutations, batch_size, tail_bins=1024, tail_fraction=0.05):
    """The pass without its shortcuts: every activation upsampled, every value above the floor
    counted under every pairing (the paired masks in memory); read out as the pass reads out."""
    acts = layer_outputs(net, images, layer)[layer]  # (N, C, h, w)
    n, channels = acts.shape[:2]
    concepts = list(masks)
    tail = _Tail(acts[:batch_size].transpose(1, 0, 2, 3).reshape(channels, -1), 1 + len(concepts) * (1 + n_permutations),
                 tail_fraction, tail_bins)
    raw = acts.transpose(1, 0, 2, 3).reshape(channels, -1)  # (C, N h w)
    up = _Bilinear(acts.shape[2:], masks[concepts[0]].shape[1:]).dense(acts).reshape(n, channels, -1)  # (N, C, P)
    orders = Permutations(n, n_permutations).rows(0, n)  # (1 + P, N)
    def counts(c, values):  # per bin of channel c
        bins = np.clip(np.searchsorted(tail.edges[c], values, side="right") - 1, 0, tail_bins - 1)
        return np.bincount(bins, minlength=tail_bins)

    for c in range(channels):
        tail.raw[c] = counts(c, raw[c][raw[c] > tail.floor[c]])
        tail.top[c] = raw[c].max()
        fires = up[:, c] > tail.floor[c]  # (N, P)
        tail.up[0, c] = counts(c, up[:, c][fires])
        for k, concept in enumerate(concepts):
            for r, order in enumerate(orders):
                inside = fires & masks[concept][order].reshape(n, -1)
                tail.up[1 + k * len(orders) + r, c] = counts(c, up[:, c][inside])
    tail.total[:] = raw.shape[1]
    thresholds, bins, share = tail.threshold(0.005)
    counts = tail.above(bins, share)
    out = {"threshold": thresholds, "fire_fraction": counts[0] / up[:, 0].size}
    for k, concept in enumerate(concepts):
        intersect = counts[1 + k * len(orders) : 1 + (k + 1) * len(orders)]
        union = counts[0][None] + masks[concept].sum() - intersect
        out[concept] = intersect / union
    return out


WORK_SIZES = ["_DEFER_BYTES", "_GROUP", "_CHUNK_CELLS", "_SCREEN_SLOTS", "_PIECE", "_MASK_BLOCK"]


@pytest.mark.parametrize("sizes", [None, (1, 1, 1, 1, 1, 1), (20000, 24, 40, 300, 70, 5)],
                         ids=["as shipped", "all 1", "small"])
@pytest.mark.parametrize("layer", ["0", "3"])
def test_the_pass_counts_as_a_pass_without_shortcuts(rng, monkeypatch, sizes, layer):
    for name, value in zip(WORK_SIZES, sizes or [getattr(dissect_module, n) for n in WORK_SIZES], strict=True):
        monkeypatch.setattr(dissect_module, name, value)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(8, 8, 3, padding=1))
    with torch.no_grad():  # channel 0 of each conv sums its window: a bright-blob detector; the rest random
        net[0].weight[0] = net[0].weight[0].abs()
        net[3].weight[0] = net[3].weight[0].abs()
    n = 120
    masks = {"blob": np.zeros((n, 14, 14), dtype=bool), "bar": np.zeros((n, 14, 14), dtype=bool)}
    masks["blob"][:, 4:7, 3:6] = True
    masks["blob"][::3] = np.roll(masks["blob"][::3], 5, axis=2)
    masks["bar"][np.arange(n), rng.integers(0, 14, n)] = True
    images = (rng.standard_normal((n, 1, 14, 14)) + 3.0 * masks["blob"][:, None]).astype(np.float32)
    result = dissect_layer(net, layer, images, masks, n_permutations=4, batch_size=16)
    streamed = dissect_layer(net, layer, [images[i : i + 16] for i in range(0, n, 16)],
                             {k: _Indexable(v) for k, v in masks.items()}, n_permutations=4, batch_size=16)
    want = _reference_pass(net, layer, images, masks, 4, 16)
    assert result["passes"] == streamed["passes"] == 1
    for got in (result, streamed):
        np.testing.assert_array_equal(got["threshold"], want["threshold"])
        np.testing.assert_array_equal(got["fire_fraction"], want["fire_fraction"])
        for concept in masks:
            iou = want[concept]  # (1 + P, C)
            np.testing.assert_array_equal(got["concepts"][concept]["iou"], iou[0])
            np.testing.assert_array_equal(got["concepts"][concept]["null_p95"], np.quantile(iou[1:], 0.95, axis=0))
            np.testing.assert_allclose(got["concepts"][concept]["null_mean"], iou[1:].mean(axis=0), rtol=1e-12)
    assert want["blob"][0].max() > 0.02  # not a comparison of zeros


def test_at_says_where_a_conv_layer_is_dissected(rng):
    # conv "0" then ReLU "1"; channel 1 is always negative before the ReLU (bias -50). at="conv" finds
    # its top 0.5% among negative values; at="activation" reads the ReLU (all zeros: nothing fires),
    # and equals dissecting the ReLU by name. Results stay keyed by "0" and say what was read.
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.copy_(torch.tensor([0.0, -50.0]))
    masks = {"m": np.zeros((40, 8, 8), dtype=bool)}
    masks["m"][:, 2:4, 2:4] = True
    images = (rng.random((40, 1, 8, 8)) + 2.0 * masks["m"][:, None]).astype(np.float32)
    post = dissect(net, "0", images, masks, n_permutations=2)
    pre = dissect(net, "0", images, masks, n_permutations=2, at="conv")
    by_name = dissect_layer(net, "1", images, masks, n_permutations=2)
    assert (post.layer, post.at, post.read) == ("0", "activation", "1 (ReLU after conv 0)")
    assert (pre.at, pre.read) == ("conv", "0 (conv output, pre-activation)")
    np.testing.assert_array_equal(post.trained["threshold"], by_name["threshold"])
    np.testing.assert_array_equal(post.trained["concepts"]["m"]["iou"], by_name["concepts"]["m"]["iou"])
    assert post.trained["threshold"][1] == 0.0 and post.trained["fire_fraction"][1] == 0.0
    assert pre.trained["threshold"][1] < -47 and pre.trained["fire_fraction"][1] > 0
    record = post.to_dict()
    assert record["layer"] == "0" and record["at"] == "activation" and record["read"] == "1 (ReLU after conv 0)"
    assert record["protocol"]["read"] == "1 (ReLU after conv 0)" and post.trained["at"] == "activation"
    with pytest.raises(KernelscopeError, match="at must be one of conv, activation, got 'relu'"):
        dissect(net, "0", images, masks, at="relu")
