"""Helpers of the explorer tests: a small run directory written by hand with the run-directory writer.

The run's first layer starts as random kernels and moves, epoch by epoch, to oriented edge kernels
(so the epoch slider has something to show); its feature maps are computed with the engine. Its
directory name and class names are hostile HTML, which the page must show as text.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from browser_helpers import CHROMIUM_ARGS, chromium

HOSTILE = "<img src=x onerror=window.__owned=true>"


def write_run(path, *, epochs: int = 3, width: int = 6, size: int = 5, seed: int = 0,
              classes: list[str] | None = None):
    """Write a complete run directory (manifest, probe, kernels and feature maps per epoch)."""
    from kernelscope.kernels import get_kernel
    from kernelscope.ops import correlate2d
    from kernelscope.train import rundir

    rng = np.random.default_rng(seed)
    classes = classes or ["plain", HOSTILE]
    raw = rng.random((4, 1, 12, 12)).astype(np.float32)  # (P, 1, 12, 12)
    raw[:, :, :, 6:] += 0.5  # a vertical edge in every probe image
    raw = np.clip(raw, 0, 1)
    images = (raw - 0.5) / 0.25
    labels = np.array([0, 1, 0, 1], dtype=np.int64)
    edge = get_kernel("sobel_x", size=size)  # (size, size)
    targets = np.stack([np.rot90(edge, k % 4) * (1 if k < 4 else -1) for k in range(width)])[:, None]
    targets = targets / np.abs(targets).max()  # (O, 1, size, size)
    init1 = 0.3 * rng.standard_normal((width, 1, size, size))
    init2 = 0.3 * rng.standard_normal((4, width, 3, 3))
    manifest = rundir.new_manifest(
        config={"epochs": epochs, "test_fraction": 0.2},
        model={"name": "handmade", "kwargs": {}},
        dataset={"name": "synthetic", "n_train": 8, "n_test": 4, "classes": classes,
                 "image_shape": [1, 12, 12], "mean": [0.5], "std": [0.25], "split_seed": 0},
        conv_layers=["conv1", "conv2"], seed=seed)
    rundir.prepare_run_dir(path)
    rundir.write_probe(path, images, raw, labels)
    for epoch in range(epochs + 1):
        t = epoch / max(epochs, 1)
        k1 = (1 - t) * init1 + t * targets  # (O, 1, size, size)
        k2 = init2 * (1 + t)  # (4, O, 3, 3)
        rundir.write_kernels(path, {"conv1": k1, "conv2": k2}, epoch=epoch)
        m1 = correlate2d(images.astype(np.float64), k1)  # (P, O, 8, 8)
        m2 = correlate2d(np.maximum(m1, 0), k2)  # (P, 4, 6, 6)
        rundir.write_feature_maps(path, epoch, {"conv1": m1, "conv2": m2})
        if epoch > 0:
            manifest["metrics"].append({"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5 + 0.1 * epoch,
                                        "test_loss": 1.2 / epoch, "test_acc": 0.45 + 0.1 * epoch,
                                        "seconds": 0.1})
            manifest["epochs_completed"] = epoch
    manifest["status"] = "complete"
    rundir.write_manifest(path, manifest)
    return path


@contextmanager
def serving(app):
    """uvicorn serving ``app`` in a background thread on a free loopback port; yields its URL."""
    import threading
    import time

    import pytest
    import uvicorn

    from kernelscope.cli.serve import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 20 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def browser_page(url: str, *, ready_timeout_ms: int = 60_000):
    """A chromium tab on ``url`` once the page says it is ready; ``tab.log`` collects console errors,
    page errors and request URLs. A page that does not get ready fails with what it still waited for."""
    import time

    import pytest

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail("BROWSER TEST NOT RUN: the `playwright` package is missing (pip install -e '.[test]')")
    executable = chromium("the explorer")
    log = {"console": [], "page": [], "requests": []}
    pending: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1300, "height": 1000})
            tab.on("console", lambda msg: log["console"].append(msg.text) if msg.type == "error" else None)
            tab.on("pageerror", lambda error: log["page"].append(str(error)))
            tab.on("request", lambda request: log["requests"].append(request.url))
            tab.on("request", lambda r: pending.__setitem__(r.url, time.monotonic()))
            tab.on("requestfinished", lambda r: pending.pop(r.url, None))
            tab.set_default_timeout(30_000)
            tab.goto(url, wait_until="load")
            try:
                tab.wait_for_selector("body[data-ready='1']", timeout=ready_timeout_ms)
            except Exception:  # noqa: BLE001 - say what the page was still waiting for
                pytest.fail(f"the page was not ready within {ready_timeout_ms / 1000:g} s; requests still pending: "
                            f"{sorted(pending)}; log {log}")
            tab.log = log
            yield tab
        finally:
            browser.close()


def wait_for(page, expression: str, timeout: float = 20.0) -> None:
    """Poll ``expression`` with page.evaluate (which the page's CSP allows; wait_for_function's eval is blocked)."""
    import time

    import pytest

    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {expression}")
        time.sleep(0.03)
