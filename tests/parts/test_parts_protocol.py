"""The occlusion protocol on hand-set models (positive control) and random ones (negative control)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.analysis.hooks import count_hooks
from kernelscope.analysis.occlusion import (
    control_masks,
    control_offsets,
    landmark_part_masks,
    occlude,
)
from kernelscope.analysis.parts import PartSelectivity, part_selectivity, part_selectivity_layers
from kernelscope.data.face_masks import shift_mask, shift_overlap
from kernelscope.errors import KernelscopeError

SIZE = 16


def _blob_images(rng, n=12):
    """Two input channels: an 'eye' blob (3x3 of ones) in channel 0, a 'mouth' blob in channel 1,
    on uniform noise in [0, 0.2]; the blobs move a little from image to image."""
    x = rng.uniform(0, 0.2, size=(n, 2, SIZE, SIZE)).astype(np.float32)
    eye = np.zeros((n, SIZE, SIZE), bool)
    mouth = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        ey, ex = rng.integers(1, 4), rng.integers(2, 11)
        my, mx = rng.integers(10, 13), rng.integers(2, 11)
        eye[i, ey:ey + 3, ex:ex + 3] = True
        mouth[i, my:my + 3, mx:mx + 3] = True
    x[:, 0][eye] = 1.0
    x[:, 1][mouth] = 1.0
    return x, {"eye": eye, "mouth": mouth}


def _hand_model():
    """ch0 sums channel 0 (eye detector), ch1 sums channel 1 (mouth), ch2 sums both;
    the face logit is ch0's spatial max - 5."""
    net = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0] = 1.0
        net[0].weight[1, 1] = 1.0
        net[0].weight[2] = 1.0
        net[3].weight.zero_()
        net[3].bias.zero_()
        net[3].weight[1, 0] = 1.0
        net[3].bias[1] = -5.0
    return net.eval()


def _window_max(x):
    """Spatial max of the 3x3 valid window sums of (N, H, W)."""
    from numpy.lib.stride_tricks import sliding_window_view

    return sliding_window_view(x, (3, 3), axis=(1, 2)).sum(axis=(-1, -2)).max(axis=(1, 2))


def test_hand_set_eye_channel_is_found_with_its_exact_drop(rng):
    x, masks = _blob_images(rng)
    net = _hand_model()
    r = part_selectivity(net, x, masks, layer="0", n_controls=6, n_boot=400)
    # expected by hand: channel 0 is the window sum of input channel 0
    intact = _window_max(x[:, 0].astype(np.float64))
    occluded = _window_max(occlude(x, masks["eye"])[:, 0].astype(np.float64))
    expected = 1 - occluded.sum() / intact.sum()
    st = r.stats["eye"]
    assert st["part_drop"][0] == pytest.approx(expected, abs=1e-5)
    assert expected > 0.75
    assert st["control_drop"][0] == pytest.approx(0.0, abs=1e-6)  # controls never touch the max window
    assert r.detectors("eye") == [0]
    assert r.detectors("mouth") == [1]
    assert not st["detector"][2]  # both blobs: covering one leaves the other
    assert st["ci_low"][0] <= st["selectivity"][0] <= st["ci_high"][0]
    out = r.output_stats["eye"]
    assert out["intact"] > 0.95 and out["occluded"] < 0.05 and out["control"] == pytest.approx(out["intact"])
    assert out["ci_low"] > 0.5
    # covering the mouth leaves the face logit alone (its controls may land on the eye: effect <= 0)
    assert r.output_stats["mouth"]["occluded"] == pytest.approx(out["intact"], abs=1e-6)
    assert r.output_stats["mouth"]["effect"] <= 1e-6


def test_a_detector_gated_on_the_controls_interval():
    # Channel 0: covering the part removes 90% every time, the controls nothing: a detector either way.
    # Channel 1: a fragile channel; on half the faces any occluder removes 80% of it, the part 16 points more.
    # The paired difference is a steady 0.16 (> margin, interval above 0), but a 0.56 drop lies inside the
    # controls' own bootstrap interval (0.4 +- ~0.23 over 12 faces): a detector, not a gated one.
    n = 12
    fragile = np.where(np.arange(n) % 2 == 0, 0.8, 0.0)  # (N,)
    intact = np.ones((n, 2))
    occluded = np.stack([np.full(n, 0.1), 1.0 - (fragile + 0.16)], axis=1)  # (N, C)
    controls = np.stack([np.ones(n), 1.0 - fragile], axis=1)[:, None, :].repeat(2, axis=1)  # (N, K, C)
    r = PartSelectivity(layer="x", parts=["eye"], intact=intact, occluded={"eye": occluded},
                        controls={"eye": controls}, settings={"margin": 0.15, "n_boot": 2000, "ci": 0.95, "seed": 0})
    st = r.stats["eye"]
    assert st["selectivity"] == pytest.approx([0.9, 0.16]) and st["ci_low"][1] > 0
    assert r.detectors("eye") == [0, 1]
    assert st["control_drop_ci_high"][1] > st["part_drop"][1] == pytest.approx(0.56)
    assert r.detectors("eye", gated=True) == [0]
    summary = r.summary()["eye"]
    assert (summary["n_detectors"], summary["n_detectors_gated"]) == (2, 1)
    assert [row["detector_gated"] for row in r.table()] == [True, False]


def test_random_model_on_noise_has_no_part_detector(rng):
    # Negative control: the "part" is a random box on pure noise, so it is exchangeable with the controls.
    n = 24
    x = rng.normal(size=(n, 1, SIZE, SIZE)).astype(np.float32)
    part = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, SIZE - 4, size=2)
        part[i, y0:y0 + 4, x0:x0 + 4] = True
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU())
    results = part_selectivity_layers(net, x, {"blob": part}, layers=["1", "3"], n_boot=400, target=None)
    for r in results.values():
        assert r.detectors("blob") == []
        sel = r.stats["blob"]["selectivity"]
        assert np.nanmax(np.abs(sel)) < 0.15
        assert abs(np.nanmean(sel)) < 0.05
        assert r.output_intact is None and r.output_stats == {}


def test_all_variants_of_a_batch_go_through_one_forward(rng):
    x, masks = _blob_images(rng, n=5)
    net = _hand_model()
    calls = []
    net.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    part_selectivity(net, x, masks, layer="0", n_controls=3, n_boot=100, batch_size=16)
    assert calls == [5 * (1 + 2 * (1 + 3))]


def test_mean_fill_and_number_fill(rng):
    x, masks = _blob_images(rng, n=3)
    filled = occlude(x, masks["eye"], "mean")
    assert np.allclose(filled[:, :, 2, 5][masks["eye"][:, 2, 5]], x.mean(axis=(2, 3))[masks["eye"][:, 2, 5]])
    assert (occlude(x, masks["eye"], 0.5)[:, 0][masks["eye"]] == 0.5).all()
    with pytest.raises(KernelscopeError, match="fill: expected 'zero', 'mean', 'blur' or a number, got 'grey'"):
        occlude(x, masks["eye"], "grey")


def test_blur_fill_keeps_the_local_luminance(rng):
    from scipy.ndimage import gaussian_filter

    flat = np.full((2, 1, 16, 16), 0.7, np.float32)
    mask = np.zeros((2, 16, 16), bool)
    mask[:, 4:8, 4:8] = True
    assert np.allclose(occlude(flat, mask, "blur"), flat)  # no edge where there was none
    x, masks = _blob_images(rng, n=2)
    blurred = gaussian_filter(x, sigma=(0, 0, 2, 2), mode="nearest")
    filled = occlude(x, masks["eye"], "blur")
    assert np.allclose(filled[:, 0][masks["eye"]], blurred[:, 0][masks["eye"]])
    assert np.array_equal(filled[:, 0][~masks["eye"]], x[:, 0][~masks["eye"]])


@pytest.mark.parametrize("shape", [(7, 9), (25, 25), (48, 48)])
def test_shift_overlap_matches_brute_force(rng, shape):
    # the engine's correlation, rounded: exact integer counts, for one mask and for a stack
    h, w = shape
    a = rng.random((2, h, w)) > 0.6
    b = rng.random((h, w)) > 0.7
    overlap = shift_overlap(a, b)
    assert overlap.dtype == np.int64 and overlap.shape == (2, 2 * h - 1, 2 * w - 1)
    np.testing.assert_array_equal(shift_overlap(a[1], b), overlap[1])
    for dy in range(-(h - 1), h, 1 if h < 10 else 5):
        for dx in range(-(w - 1), w, 1 if w < 10 else 3):
            for k in range(2):
                assert overlap[k, dy + h - 1, dx + w - 1] == (a[k] & shift_mask(b, dy, dx)).sum()


def test_control_offsets_are_drawn_from_the_brute_force_placements():
    # the valid placements, counted pixel by pixel, in the row-major order of (dy, dx): the same
    # draws from the same generator give the same offsets (so the same controls, the same numbers)
    mask = np.zeros((25, 25), bool)
    mask[8:11, 5:9] = mask[8:11, 14:18] = True
    allowed = np.zeros((25, 25), bool)
    allowed[2:23, 3:22] = True
    valid = [(dy, dx) for dy in range(-24, 25) for dx in range(-24, 25)
             if shift_mask(mask, dy, dx).sum() == mask.sum() and not (shift_mask(mask, dy, dx) & mask).any()
             and not (shift_mask(mask, dy, dx) & ~allowed).any()]
    assert 100 < len(valid) < 25 * 25
    pick = np.random.default_rng(7).choice(len(valid), size=8, replace=False)
    got = control_offsets(mask, 8, np.random.default_rng(7), allowed=allowed)
    np.testing.assert_array_equal(got, np.array(valid)[pick])


def test_control_offsets_are_inside_disjoint_and_of_equal_area(rng):
    mask = np.zeros((12, 12), bool)
    mask[3:6, 2:5] = True
    mask[3:6, 7:10] = True  # two "eyes"
    allowed = np.zeros((12, 12), bool)
    allowed[1:, :] = True
    for dy, dx in control_offsets(mask, 50, rng, allowed=allowed):
        moved = shift_mask(mask, int(dy), int(dx))
        assert moved.sum() == mask.sum()
        assert not (moved & mask).any()
        assert not (moved & ~allowed).any()


def test_control_masks_move_each_images_part(rng):
    x, masks = _blob_images(rng, n=4)
    moved = control_masks(masks["eye"], 5, np.random.default_rng(0))
    assert moved.shape == (4, 5, SIZE, SIZE)
    assert (moved.sum(axis=(2, 3)) == masks["eye"].sum(axis=(1, 2))[:, None]).all()
    assert not (moved & masks["eye"][:, None]).any()
    again = np.random.default_rng(0)
    for i in range(4):  # image by image, in order, from one generator
        for k, (dy, dx) in enumerate(control_offsets(masks["eye"][i], 5, again)):
            np.testing.assert_array_equal(moved[i, k], shift_mask(masks["eye"][i], int(dy), int(dx)))


def test_occluder_too_large_for_the_image():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    with pytest.raises(KernelscopeError, match="image too small for the occluder: a 16-pixel part mask in a 6x6 image"):
        control_offsets(mask, 4, np.random.default_rng(0))


def test_landmark_masks_are_discs_at_the_landmarks():
    marks = np.array([[[0.25, 0.25], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0.75, 0.75]]])
    m = landmark_part_masks(marks, 48, parts=["left_eye", "right_eye", "eyes", "nose", "mouth"], radius=4 / 48)
    ys, xs = np.nonzero(m["left_eye"][0])
    assert xs.mean() == pytest.approx(11.5) and ys.mean() == pytest.approx(11.5)
    assert (m["eyes"] == (m["left_eye"] | m["right_eye"])).all()
    assert m["mouth"][0, 35, 12:36].all() and not m["mouth"][0, 30].any()
    with pytest.raises(KernelscopeError, match="unknown part \\(landmark parts\\) 'ears'"):
        landmark_part_masks(marks, 48, parts=["ears"])


def test_bad_inputs_are_one_line_errors(rng):
    x, masks = _blob_images(rng, n=4)
    net = _hand_model()
    with pytest.raises(KernelscopeError, match=r"part 'nose' has no mask \(masks given: eye, mouth\)"):
        part_selectivity(net, x, masks, layer="0", parts=["nose"])
    with pytest.raises(KernelscopeError, match=r"mask of part 'eye': expected shape \(4, 16, 16\) to match the images, got \(4, 8, 8\)"):
        part_selectivity(net, x, {"eye": masks["eye"][:, :8, :8]}, layer="0")
    empty = masks["eye"].copy()
    empty[2] = False
    with pytest.raises(KernelscopeError, match="mask of part 'eye' is empty on image 2"):
        part_selectivity(net, x, {"eye": empty}, layer="0")
    with pytest.raises(KernelscopeError, match="unknown layer 'conv9'"):
        part_selectivity(net, x, masks, layer="conv9")


def test_layer_without_spatial_maps_fails_and_leaves_no_hook(rng):
    x, masks = _blob_images(rng, n=4)
    net = _hand_model()
    with pytest.raises(KernelscopeError, match=r"layer '2' \(Flatten\) gives outputs of shape \(3,\) per image, not spatial maps \(C, H, W\); choose a convolution or pooling layer \(conv layers: 0\)"):
        part_selectivity(net, x, masks, layer="2", n_controls=4)
    assert count_hooks(net) == 0


def test_target_out_of_range_is_a_one_line_error(rng):
    x, masks = _blob_images(rng, n=4)
    with pytest.raises(KernelscopeError, match=r"target: expected a class index in \[0, 1\], got 5"):
        part_selectivity(_hand_model(), x, masks, layer="0", n_controls=2, target=5)


def _offset_model(bias):
    """One 1x1 conv channel, ``x + bias``, then a ReLU: the conv's own output goes negative where x < -bias."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(bias)
        net(torch.zeros(1, 1, SIZE, SIZE))
    return net.eval()


def test_a_response_that_turns_negative_under_occlusion_drops_at_most_100_percent(rng):
    # intact: the eye blob (1.0) gives a maximum of 0.5; occluded with 0, the conv's map is -0.5
    # everywhere (a signed maximum of -0.5 would be a drop of 200%): clamped at 0, the drop is 100%
    x = np.zeros((6, 1, SIZE, SIZE), np.float32)
    eye = np.zeros((6, SIZE, SIZE), bool)
    for i in range(6):
        y0, x0 = rng.integers(2, 6), rng.integers(2, 11)
        eye[i, y0:y0 + 2, x0:x0 + 3] = True
    x[:, 0][eye] = 1.0
    for at in ("conv", "activation"):
        r = part_selectivity(_offset_model(-0.5), x, {"eye": eye}, layer="0", n_controls=4, n_boot=100,
                             target=None, at=at)
        assert (r.intact >= 0).all() and (r.occluded["eye"] >= 0).all() and (r.controls["eye"] >= 0).all()
        st = r.stats["eye"]
        assert st["part_drop"][0] == pytest.approx(1.0, abs=1e-6) and st["part_drop"][0] <= 1.0
        assert st["control_drop"][0] == pytest.approx(0.0, abs=1e-6)
        assert r.detectors("eye") == [0]


def test_at_says_where_a_conv_layer_is_read(rng):
    # conv "0" then Tanh "1": at="activation" reads "1" (so it equals naming "1"); at="conv" reads "0".
    # (After a ReLU both read the same clamped maxima: max(relu(a)) = max(max(a), 0).)
    x, masks = _blob_images(rng, n=6)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.LazyLinear(2))
    with torch.no_grad():
        net(torch.zeros(1, 2, SIZE, SIZE))
    options = {"n_controls": 3, "n_boot": 50, "target": None}
    post = part_selectivity_layers(net, x, masks, layers=["0", "1"], **options)
    pre = part_selectivity(net, x, masks, layer="0", at="conv", **options)
    assert list(post) == ["0", "1"] and post["0"].layer == "0"
    assert post["0"].at == "activation" and post["0"].read == "1 (Tanh after conv 0)"
    assert pre.at == "conv" and pre.read == "0 (conv output, pre-activation)"
    np.testing.assert_array_equal(post["0"].intact, post["1"].intact)
    conv = torch.nn.functional.conv2d(torch.from_numpy(x), net[0].weight, net[0].bias).detach()
    np.testing.assert_allclose(pre.intact, conv.amax(dim=(2, 3)).clamp(min=0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(post["0"].intact, np.tanh(pre.intact), rtol=1e-5)
    assert (pre.intact > 0.1).any()  # where tanh is not the identity
    record = post["0"].to_json()
    assert record["at"] == "activation" and record["read"] == "1 (Tanh after conv 0)"
    assert record["summary"]["eye"]["read"] == "1 (Tanh after conv 0)"
    with pytest.raises(KernelscopeError, match="at must be one of conv, activation, got 'pre'"):
        part_selectivity(net, x, masks, layer="0", at="pre", **options)
