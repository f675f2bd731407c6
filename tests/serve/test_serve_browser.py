"""The explorer in a real browser: Debian's chromium driven by Playwright, against uvicorn on 127.0.0.1.

Types the README example, clicks the top-left output cell and reads the sum the page shows (it must
equal the engine's); switches to convolution and sees the flipped kernel; moves the epoch slider of
a run and sees the kernel image change to the colours its recorded values imply; hovers a kernel for
its atlas class; checks that hostile names are shown as text and that the page logs no console error.

When chromium is missing this test FAILS loudly (install it with `apt-get install -y chromium`),
unless KERNELSCOPE_ALLOW_NO_BROWSER=1 says that skipping is intended. Screenshots go to
$KERNELSCOPE_SCREENSHOT_DIR when set (else the test's temporary directory).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import HOSTILE, browser_page, serving, wait_for

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def server_url(serve_app):
    """uvicorn serving the app in a background thread on a free loopback port."""
    with serving(serve_app) as url:
        yield url


@pytest.fixture(scope="module")
def page(server_url):
    with browser_page(server_url + "/", ready_timeout_ms=20_000) as tab:
        yield tab


def _shot(page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("KERNELSCOPE_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"explorer-{name}.png"), full_page=True)


def test_readme_example_sum_equals_the_engine(page, tmp_path):
    from kernelscope.ops import correlate2d, parse_matrix

    x_text, k_text = "9 8 7 6; 5 4 3 2; 1 2 3 4; 5 6 7 8", "1 2 3; 4 5 6; 7 8 9"
    page.fill("#in-input", "1 1 1; 1 1 1; 1 1 1")  # something else first, so the example below is really typed
    wait_for(page, "document.querySelectorAll('#grid-input .cell').length === 9")
    page.fill("#in-input", x_text)
    page.fill("#in-kernel", k_text)
    wait_for(page, "document.querySelectorAll('#grid-output .cell').length === 4")
    page.click("#grid-output .cell[data-row='0'][data-col='0']")
    page.wait_for_selector("#explain-panel:not([hidden])")
    engine = correlate2d(parse_matrix(x_text), parse_matrix(k_text))  # (2, 2)
    assert page.text_content("#explain-sum") == str(engine[0, 0]) == "154"
    assert page.text_content("#explain-total") == "154"
    assert page.text_content("#explain-formula").endswith("= 154")
    highlighted = page.eval_on_selector_all("#grid-input .cell.hl", "cells => cells.map(c => c.textContent)")
    assert highlighted == ["9", "8", "7", "5", "4", "3", "1", "2", "3"]
    outputs = page.eval_on_selector_all("#grid-output .cell", "cells => cells.map(c => Number(c.textContent))")
    assert outputs == engine.ravel().tolist()
    _shot(page, tmp_path, "operation")
    assert page.log["console"] == [] and page.log["page"] == []


def test_convolution_switch_shows_the_flipped_kernel(page):
    from kernelscope.ops import convolve2d, parse_matrix

    page.check("input[name=mode][value=convolve]")
    page.wait_for_selector("#flip-box:not([hidden])")
    wait_for(page, "document.querySelector('#output-caption').textContent.includes('convolution')")
    applied = page.eval_on_selector_all("#grid-applied .cell", "cells => cells.map(c => Number(c.textContent))")
    assert applied == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    outputs = page.eval_on_selector_all("#grid-output .cell", "cells => cells.map(c => Number(c.textContent))")
    engine = convolve2d(parse_matrix("9 8 7 6; 5 4 3 2; 1 2 3 4; 5 6 7 8"), parse_matrix("1 2 3; 4 5 6; 7 8 9"))
    assert outputs == engine.ravel().tolist()
    page.check("#in-backward")
    wait_for(page, "document.querySelectorAll('#grid-grad-kernel .cell').length === 9")
    grad_bias = page.text_content("#grad-bias")
    assert grad_bias == "4"  # 2x2 output, dL/dout all ones
    from kernelscope.ops.explain_backward import explain_backward

    reference = explain_backward(parse_matrix("9 8 7 6; 5 4 3 2; 1 2 3 4; 5 6 7 8"),
                                 parse_matrix("1 2 3; 4 5 6; 7 8 9"), mode="convolve")
    shown = page.eval_on_selector_all("#grid-grad-kernel .cell", "cells => cells.map(c => Number(c.textContent))")
    assert shown == np.ravel(reference.kernel_grad).tolist()
    page.click("#grid-grad-kernel .cell[data-row='0'][data-col='0']")
    wait_for(page, "document.querySelector('#grad-explain').textContent.length > 0")
    # convolution: K's top-left tap is flip(K)'s bottom-right, which saw 3, 4, 7, 8
    assert page.text_content("#grad-explain").endswith(
        f"(2, 2): 1\u00b73 + 1\u00b74 + 1\u00b77 + 1\u00b78 = {reference.kernel_grad[0][0]}")
    assert reference.kernel_grad[0][0] == 22
    page.uncheck("#in-backward")
    page.check("input[name=mode][value=correlate]")
    page.wait_for_selector("#flip-box[hidden]", state="attached")
    assert page.log["console"] == [] and page.log["page"] == []


def _expected_rgb(kernels: np.ndarray, index: int) -> np.ndarray:
    """The page's colours for kernel ``index`` of ``(O, 1, kh, kw)`` on the layer-shared diverging scale."""
    m = max(abs(kernels.min()), abs(kernels.max()))
    t = np.clip(kernels[index, 0] / m, -1, 1)  # (kh, kw)
    a = np.round(255 * (1 - np.abs(t)))
    rgb = np.where(t[..., None] >= 0, np.stack([np.full_like(a, 255), a, a], -1),
                   np.stack([a, a, np.full_like(a, 255)], -1))
    return rgb  # (kh, kw, 3)


def _canvas_rgb(page, index: int) -> np.ndarray:
    pixels = page.evaluate("""(i) => {
        const c = document.querySelector(`#kernel-grid .kcell[data-index='${i}'] canvas`);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        return {w: c.width, h: c.height, data: Array.from(d.data)};
    }""", index)
    return np.array(pixels["data"]).reshape(pixels["h"], pixels["w"], 4)[..., :3]


def test_epoch_slider_changes_the_kernel_image(page, serve_run, tmp_path):
    from kernelscope.train.rundir import load_run

    run = load_run(serve_run)
    page.click("#tab-run")
    page.wait_for_selector("#kernel-grid[data-epoch='3'] .kcell")
    names = page.eval_on_selector_all("#run-select option", "options => options.map(o => o.textContent)")
    assert len(names) == 1 and HOSTILE in names[0]  # the hostile directory name, as text
    last = _canvas_rgb(page, 0)
    assert np.abs(last - _expected_rgb(run.kernels(3, "conv1"), 0)).max() <= 2
    page.focus("#epoch-slider")
    page.keyboard.press("Home")  # the slider's first position: epoch 0, the initialisation
    page.wait_for_selector("#kernel-grid[data-epoch='0']")
    assert page.text_content("#epoch-label").startswith("0 of 3")
    first = _canvas_rgb(page, 0)
    assert np.abs(first - _expected_rgb(run.kernels(0, "conv1"), 0)).max() <= 2
    assert np.abs(first.astype(int) - last.astype(int)).max() > 50  # visibly different
    page.keyboard.press("End")
    page.wait_for_selector("#kernel-grid[data-epoch='3']")
    # hover: the atlas class and best match of kernel 0 at epoch 3 (edge kernels by construction)
    page.wait_for_selector("#atlas-table:not([hidden])", timeout=60_000)
    page.hover("#kernel-grid .kcell[data-index='0']")
    page.wait_for_selector("#kernel-tooltip:not([hidden])")
    tip = page.text_content("#kernel-tooltip")
    assert "class: edge-like" in tip and "vs control p99" in tip
    page.wait_for_selector("#maps-grid .kcell")
    _shot(page, tmp_path, "run")
    assert page.evaluate("() => window.__owned === undefined")
    probe_titles = page.eval_on_selector_all("#probe-strip canvas", "cs => cs.map(c => c.title)")
    assert probe_titles[1] == f"probe 1: {HOSTILE}"
    assert page.log["console"] == [] and page.log["page"] == []


def test_no_request_leaves_the_server_and_errors_are_shown(page, server_url):
    assert all(url.startswith(server_url) or url.startswith("data:") for url in page.log["requests"])
    page.click("#tab-op")
    page.fill("#in-input", "1 2; 3")
    wait_for(page, "document.querySelector('#op-error').textContent.length > 0")
    assert page.text_content("#op-error") == ("input: row 1 has 1 numbers but row 0 has 2; "
                                              "every row needs the same count")
    assert "stale" in page.get_attribute("#op-grids", "class")  # the grids no longer match: dimmed
    page.fill("#in-input", "1 2; 3 4")
    page.fill("#in-kernel", "1 2 3; 4 5 6; 7 8 9")  # larger than the input: the server's 400, shown as text
    wait_for(page, "document.querySelector('#op-error').textContent.includes('larger')")
    assert page.text_content("#op-error").startswith("kernel 3x3 is larger than the padded input 2x2")
    page.click("#tab-run")
    page.click("#patches-button")  # this hand-written run has no checkpoint: the server's 400, as text
    wait_for(page, "document.querySelector('#patches-status').textContent.includes('no checkpoint')")
    assert page.text_content("#patches-status").startswith("top patches: run 0 has no checkpoint at epoch 3")
    # the only console messages are the browser's notes on those 400 responses, no script error
    assert all("status of 400" in message for message in page.log["console"])
    assert page.log["page"] == []
