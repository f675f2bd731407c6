"""The network view: its JSON API (incl. 4xx) and, in Chromium, a clicked cell of a trained run's second conv layer
whose displayed total and activation equal the model's own, computed here independently (plain forward hooks)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from serve_helpers import browser_page, serving, wait_for


@pytest.fixture(scope="module")
def net_app(trained_run):
    from kernelscope.serve import create_app

    return create_app([trained_run], sources=["onet"], atlas_n_null=60)


@pytest.fixture(scope="module")
def net_client(net_app):
    from fastapi.testclient import TestClient

    with TestClient(net_app) as test_client:
        yield test_client


def _own_outputs(run_path, layer: str, channel: int, row: int, col: int, probe: int = 0):
    """The run's model at its last checkpoint on probe image ``probe``: conv output and the ReLU after it."""
    from kernelscope.train.rundir import load_run

    run = load_run(run_path)
    model = run.model(run.checkpoint_epochs[-1]).eval()
    images, _, _ = run.probe()
    modules = dict(model.named_modules())
    parent, _, own = layer.rpartition(".")
    names = [n for n, _ in modules[parent].named_children()] if parent else []
    relu = f"{parent}.{names[names.index(own) + 1]}" if parent else None
    seen = {}
    handles = [modules[layer].register_forward_hook(lambda m, i, o: seen.setdefault("conv", o.detach()))]
    if relu is not None and isinstance(modules[relu], torch.nn.ReLU):
        handles.append(modules[relu].register_forward_hook(lambda m, i, o: seen.setdefault("relu", o.detach())))
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.asarray(images[probe : probe + 1], dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    conv = float(seen["conv"][0, channel, row, col])
    return conv, float(seen["relu"][0, channel, row, col]) if "relu" in seen else conv, tuple(seen["conv"].shape[1:])


def test_networks_listed_runs_first_then_sources(net_client, trained_run):
    listed = net_client.get("/api/network").json()
    assert [n["kind"] for n in listed] == ["run", "pretrained"]
    assert listed[0]["epochs"] and listed[0]["images"][0] == "probe:0"
    assert listed[1]["input_shape"] == [3, 48, 48] and listed[1]["conv_layers"] == ["conv1", "conv2", "conv3", "conv4"]
    schema = net_client.get("/openapi.json").json()
    for path in ("/api/network", "/api/network/{net_id}/maps", "/api/network/{net_id}/cell",
                 "/api/network/{net_id}/channel", "/api/network/upload"):
        assert path in schema["paths"]


def test_maps_sample_wide_layers_and_say_which(net_client):
    import base64

    maps = net_client.get("/api/network/1/maps", params={"image": "sample:camera", "max_channels": 8}).json()
    assert [m["layer"] for m in maps["layers"]] == ["conv1", "conv2", "conv3", "conv4"]
    conv2 = maps["layers"][1]
    assert conv2["shape"][0] == 64 and conv2["channels"] == list(range(0, 64, 8))
    assert conv2["sample"] == "8 of 64 channels: every 8th from 0"
    assert len(base64.b64decode(conv2["data"])) == 8 * conv2["shape"][1] * conv2["shape"][2]
    assert maps["layers"][0]["read_at"] == "prelu1 (PReLU after conv conv1)"


def test_cell_of_the_run_equals_the_model(net_client, trained_run):
    info = net_client.get("/api/network").json()[0]
    layer = info["conv_layers"][1]
    _, _, shape = _own_outputs(trained_run, layer, 0, 0, 0)
    c, h, w = shape[0] - 1, shape[1] // 2, shape[2] - 1
    conv, relu, _ = _own_outputs(trained_run, layer, c, h, w)
    cell = net_client.get("/api/network/0/cell", params={"image": "probe:0", "layer": layer, "channel": c,
                                                          "row": h, "col": w}).json()
    assert abs(cell["total"] - conv) <= cell["tolerance"] and cell["total_agrees"]
    assert abs(cell["post"] - relu) <= 1e-5 and cell["post_agrees"]
    assert cell["network_total"] == conv


@pytest.mark.parametrize(("url", "params", "status", "message"), [
    ("/api/network/0/cell", {"image": "probe:0", "layer": "nope", "channel": 0, "row": 0, "col": 0}, 400,
     "unknown conv layer 'nope'"),
    ("/api/network/1/cell", {"image": "sample:camera", "layer": "conv2", "channel": 64, "row": 0, "col": 0}, 400,
     "channel must be 0..63 for layer 'conv2'"),
    ("/api/network/1/cell", {"image": "sample:camera", "layer": "conv2", "channel": 0, "row": 21, "col": 0}, 400,
     "row must be 0..20"),
    ("/api/network/7/maps", {"image": "sample:camera"}, 404, "network 7 is not served; this server has networks 0..1"),
    ("/api/network/0/maps", {"image": "probe:0", "epoch": 99}, 400, "epoch 99 has no checkpoint in run 0"),
    ("/api/network/1/maps", {"image": "sample:camera", "epoch": 1}, 400, "is not a run: it has no epochs"),
    ("/api/network/1/maps", {"image": "probe:0"}, 400, "network 1 is not a run and has no probe images"),
    ("/api/network/0/maps", {"image": "probe:99"}, 400, "probe must be 0..3"),
    ("/api/network/1/maps", {"image": "sample:nope"}, 400, "unknown sample image 'nope'"),
    ("/api/network/1/maps", {"image": "upload:0123"}, 400, "is not (or no longer) uploaded"),
    ("/api/network/1/maps", {"image": "/etc/passwd"}, 422, "image: String should match pattern"),
    ("/api/network/1/channel", {"layer": "conv2", "channel": 0, "part": "nope"}, 422, "part: String should match"),
    ("/api/network/1/channel", {"layer": "conv2", "channel": 99, "part": "atlas"}, 400, "channel must be 0..63"),
])
def test_bad_requests_answer_4xx_with_one_line(net_client, url, params, status, message):
    response = net_client.get(url, params=params)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"] and "\n" not in response.json()["detail"]


def test_upload_limits(net_client):
    from PIL import Image

    def png(w, h):
        buffer = io.BytesIO()
        Image.new("RGB", (w, h), (200, 30, 30)).save(buffer, format="PNG")
        return buffer.getvalue()

    ok = net_client.post("/api/network/upload", content=png(64, 40)).json()
    assert ok["width"] == 64 and ok["height"] == 40 and ok["image"].startswith("upload:")
    maps = net_client.get("/api/network/1/maps", params={"image": ok["image"]}).json()
    assert maps["image_note"] == "the uploaded image" and maps["input"]["shape"] == [3, 48, 48]
    big = net_client.post("/api/network/upload", content=png(2100, 2100))
    assert big.status_code == 400 and "2100x2100 = 4410000 pixels; at most 4194304" in big.json()["detail"]
    junk = net_client.post("/api/network/upload", content=b"not an image")
    assert junk.status_code == 400 and "not a readable image" in junk.json()["detail"]
    huge = net_client.post("/api/network/upload", content=b"\0" * (1 << 21))
    assert huge.status_code == 413


def test_channel_parts_compute_in_the_background(net_client):
    params = {"layer": "conv1", "channel": 2, "part": "patches"}
    first = net_client.get("/api/network/1/channel", params=params).json()
    assert first["status"] in ("computing", "done")
    deadline = time.monotonic() + 60
    while (r := net_client.get("/api/network/1/channel", params=params).json())["status"] == "computing":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert r["status"] == "done", r["message"]
    values = r["result"]["values"]
    assert len(values) == 6 and values == sorted(values, reverse=True)


def test_visualisation_and_projection_of_a_run_channel(net_client, monkeypatch):
    from kernelscope.serve import network

    monkeypatch.setattr(network, "VIS_STEPS", 4)  # the rendering itself is tested in tests/analysis/test_visualize
    params = {"layer": "features.0", "channel": 1, "part": "visualization"}
    deadline = time.monotonic() + 90
    while (r := net_client.get("/api/network/0/channel", params=params).json())["status"] == "computing":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert r["status"] == "done", r["message"]
    vis = r["result"]
    assert vis["steps"] == 4 and vis["image"]["shape"] == [1, 8, 8] and vis["init_ratio"] is not None
    assert sorted(vis["projections"]) == ["deconvnet", "guided"]
    assert vis["projections"]["guided"]["shape"][0] == vis["patches"]["shape"][0] == 6
    assert vis["values"] == sorted(vis["values"], reverse=True)


# ---- in Chromium ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def net_page(net_app):
    with serving(net_app) as url, browser_page(url + "/#network") as tab:
        yield tab


def _small_png(png: bytes, path) -> None:
    """A screenshot as a 128-colour palette PNG (the docs' figures stay small)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").quantize(colors=128).save(path, optimize=True)


def _click_cell(page, layer: str, channel: int, row: int, col: int) -> None:
    box = page.locator(f"canvas.net-map[data-layer='{layer}'][data-channel='{channel}']").bounding_box()
    h = int(page.get_attribute(f"canvas.net-map[data-layer='{layer}'][data-channel='{channel}']", "data-h"))
    w = int(page.get_attribute(f"canvas.net-map[data-layer='{layer}'][data-channel='{channel}']", "data-w"))
    page.mouse.click(box["x"] + (col + 0.5) * box["width"] / w, box["y"] + (row + 0.5) * box["height"] / h)


def test_click_a_cell_of_the_second_conv_layer_in_chromium(net_page, trained_run, tmp_path):
    import os
    from pathlib import Path

    page = net_page
    page.wait_for_selector("#view-net:not([hidden]) canvas.net-map")
    layer = page.eval_on_selector_all(".net-layer[data-layer]", "cols => cols.map(c => c.dataset.layer)")[1]
    channel = int(page.eval_on_selector_all(f"canvas.net-map[data-layer='{layer}']",
                                            "cs => cs.map(c => c.dataset.channel)")[1])
    _, _, shape = _own_outputs(trained_run, layer, 0, 0, 0)
    row, col = shape[1] - 1, 1
    conv, relu, _ = _own_outputs(trained_run, layer, channel, row, col)
    _click_cell(page, layer, channel, row, col)
    page.wait_for_selector("#cell-panel[data-ready='1']")
    assert page.text_content("#cell-title").startswith(f"{layer}, output channel {channel}, cell ({row}, {col})")
    shown = float(page.text_content("#cell-total"))
    assert abs(shown - conv) <= 5e-6 * max(1.0, abs(conv)), (shown, conv)
    assert abs(float(page.get_attribute("#cell-total", "data-value")) - conv) <= 1e-5
    assert abs(float(page.text_content("#cell-post")) - relu) <= 5e-6 * max(1.0, abs(relu))
    assert page.text_content("#cell-check").startswith("\u2713 equals the network's own output")
    assert page.text_content("#cell-post-check").startswith("\u2713")
    # the channel's analyses on request: top patches and template arrive (computed in the background)
    page.click("#chan-analyse")
    wait_for(page, "document.querySelectorAll('#chan-patches canvas').length === 6", timeout=60)
    wait_for(page, "document.querySelector('#chan-template canvas') !== null", timeout=60)
    # its visualisation (with the init control's ratio), top patches and their projections, side by side
    page.click("#chan-render")
    wait_for(page, "document.querySelector('#chan-vis canvas') !== null", timeout=90)
    assert "init control" in page.text_content("#chan-vis")
    assert page.eval_on_selector_all("#chan-proj tr", "rows => rows.map(r => r.cells[0].textContent)") == [
        "top patch", "guided", "deconvnet"]
    wait_for(page, "document.querySelector('#chan-atlas').textContent.startsWith('class: ')", timeout=90)
    folder = Path(os.environ.get("KERNELSCOPE_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    _small_png(page.locator("#chan-panel").screenshot(), folder / "explorer-network-channel.png")
    # a pretrained network (ONet, 48 px RGB) on a bundled sample image: a cell of conv2 explained and checked
    page.select_option("#net-select", "1")
    wait_for(page, "document.querySelector('#net-image').value === 'sample:astronaut'")
    page.wait_for_selector("canvas.net-map[data-layer='conv2'][data-channel='8']")
    _click_cell(page, "conv2", 8, 10, 10)
    page.wait_for_selector("#cell-panel[data-ready='1']")
    assert page.text_content("#cell-title").startswith("conv2, output channel 8, cell (10, 10) of 64x21x21")
    assert page.text_content("#cell-check").startswith("\u2713") and page.text_content("#cell-post-check").startswith("\u2713")
    assert page.text_content("#cell-after") == "prelu2 (PReLU)"
    _small_png(page.locator("#view-net").screenshot(), folder / "explorer-network.png")
    assert page.log["console"] == [] and page.log["page"] == []
