"""The explorer's speed: operation-view interactions and a run's page load, over real HTTP.

    .venv/bin/python benchmarks/bench_serve.py              # both tables (and the browser, when chromium is here)
    .venv/bin/python benchmarks/bench_serve.py --no-browser

uvicorn serves ``create_app`` on a free 127.0.0.1 port in a background thread; an httpx
client (one keep-alive connection) plays the page. Times are medians after a warm-up.

1. **Operation view** (goal: < 100 ms per interaction for inputs up to 64x64): one
   interaction is one ``POST /api/operation`` with a clicked cell: the engine's output,
   the padded input and the cell's explain trace, as JSON. Baseline, measured in the
   same process: the engine alone (``correlate2d`` plus ``explain`` of the cell's window).
2. **A run's page load** (goal: < 2 s for 20 epochs of 64 kernels): a synthetic run
   written with the run-directory writer (20 epochs, a 64x1x7x7 first layer and a
   32x64x3x3 second layer, 16 probe images of 28x28 with feature maps at every epoch).
   "Page load" is every request the page makes before it is drawn: the page and its
   three static files, /api/info, the first operation, /api/runs, the run summary, the
   last epoch's kernels, the probe images and one probe's feature maps. Cold: a fresh
   app (nothing cached); warm: the same requests again. Baseline: reading the same
   arrays straight from the run directory (``load_run``). The epoch slider's 20 kernel
   requests and the atlas (computed in the background, then cached) are timed apart.
   With chromium present, also the wall time from navigation until the kernel grid and
   the feature maps are drawn, in a real browser.
3. **The network view** (goal: a 150-224 px network's view loads in < 3 s): in chromium,
   ``kernelscope serve NETWORK`` for the pretrained 224 px MobileNetV2 (52 conv layers) and
   dlib's 150 px face ResNet (29 conv layers), the bundled sample image ``astronaut``, 8
   channels per layer. Load: navigation to ``/#network`` until every layer's maps are drawn,
   cold (a fresh server: the model is read, the forward pass run) and warm (the same page
   again: maps cached). Click: a click on a map cell until its explanation (windows, kernel
   slices, products, sums, the check) is drawn; the median of 5 cells of different layers.
    .venv/bin/python benchmarks/bench_serve.py --only-network   # this part alone
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # NumPy and torch share the process (FINDINGS.md)
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402


def median_time(fn, *, runs: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Server:
    """uvicorn serving ``app`` on a free loopback port in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        from kernelscope.cli.serve import bind

        self.sock = bind("127.0.0.1", 0)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


# ---- 1. the operation view --------------------------------------------------------------------

OPERATION_CASES = [  # (input size, kernel size, extra settings)
    (4, 3, {}),
    (16, 5, {"padding": "same", "padding_mode": "reflect"}),
    (32, 7, {"padding": "same", "stride": 2}),
    (64, 3, {"padding": "same"}),
    (64, 15, {"padding": "same", "padding_mode": "circular"}),
    (64, 15, {"padding": "full", "dilation": 2, "mode": "convolve"}),
]


def bench_operation(client: httpx.Client) -> None:
    from kernelscope.serve.operation import as_numbers, operation

    rng = np.random.default_rng(0)
    print("1. operation view: one interaction = POST /api/operation with a clicked cell (goal < 100 ms)")
    print(f"   {'input':>6} {'kernel':>6} {'settings':<44} {'engine ms':>9} {'HTTP ms':>8} {'ratio':>6} {'JSON kB':>8}")
    worst = 0.0
    for size, ksize, extra in OPERATION_CASES:
        x = rng.integers(0, 256, (size, size)).tolist()
        k = rng.integers(-4, 5, (ksize, ksize)).tolist()
        body = {"input": x, "kernel": k, **extra, "cell": [0, 0]}
        xa, ka = as_numbers(x), as_numbers(k)
        options = {key: tuple(v) if isinstance(v, list) else v for key, v in extra.items()}

        def engine(xa=xa, ka=ka, options=options):
            operation(xa, ka, cell=[0, 0], **options)

        def http(body=body):
            response = client.post("/api/operation", json=body)
            response.raise_for_status()
            return response

        t_engine = median_time(engine)
        t_http = median_time(http)
        kb = len(http().content) / 1024
        worst = max(worst, t_http)
        settings = ", ".join(f"{key}={v}" for key, v in extra.items()) or "valid"
        print(f"   {size:>4}^2 {ksize:>4}^2 {settings:<44} {1e3 * t_engine:9.2f} {1e3 * t_http:8.2f} "
              f"{t_http / t_engine:6.1f} {kb:8.1f}")
    print(f"   slowest interaction: {1e3 * worst:.1f} ms ({'meets' if worst < 0.1 else 'MISSES'} the 100 ms goal)")
    print("   engine = kernelscope.serve.operation.operation in-process (correlate2d, pad2d, explain of the window);")
    print("   HTTP = the same through uvicorn, pydantic validation and JSON, one keep-alive connection.\n")


# ---- 2. a run's page load ---------------------------------------------------------------------

def write_synthetic_run(path: Path, *, epochs: int = 20, width: int = 64, probes: int = 16) -> Path:
    from kernelscope.train import rundir

    rng = np.random.default_rng(0)
    raw = rng.random((probes, 1, 28, 28)).astype(np.float32)
    manifest = rundir.new_manifest(
        config={"epochs": epochs, "test_fraction": 0.2}, model={"name": "synthetic", "kwargs": {}},
        dataset={"name": "synthetic", "n_train": 100, "n_test": 20, "classes": [str(i) for i in range(10)],
                 "image_shape": [1, 28, 28], "mean": [0.5], "std": [0.25], "split_seed": 0},
        conv_layers=["conv1", "conv2"], seed=0)
    rundir.prepare_run_dir(path)
    rundir.write_probe(path, (raw - 0.5) / 0.25, raw, np.arange(probes) % 10)
    k1 = 0.1 * rng.standard_normal((width, 1, 7, 7))
    k2 = 0.1 * rng.standard_normal((32, width, 3, 3))
    for epoch in range(epochs + 1):
        k1 = k1 + 0.02 * rng.standard_normal(k1.shape)
        k2 = k2 + 0.02 * rng.standard_normal(k2.shape)
        rundir.write_kernels(path, {"conv1": k1, "conv2": k2}, epoch=epoch)
        rundir.write_feature_maps(path, epoch, {
            "conv1": rng.standard_normal((probes, width, 22, 22)).astype(np.float32),
            "conv2": rng.standard_normal((probes, 32, 20, 20)).astype(np.float32)})
        if epoch:
            manifest["metrics"].append({"epoch": epoch, "train_loss": 1 / epoch, "train_acc": 0.9, "test_loss": 1.1 / epoch,
                                        "test_acc": 0.88, "seconds": 1.0})
            manifest["epochs_completed"] = epoch
    manifest["status"] = "complete"
    rundir.write_manifest(path, manifest)
    return path


PAGE_REQUESTS = [
    ("GET", "/", None), ("GET", "/static/network.js", None), ("GET", "/static/app.js", None),
    ("GET", "/static/style.css", None),
    ("GET", "/api/info", None),
    ("POST", "/api/operation", {"input": [[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]],
                                "kernel": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}),
    ("GET", "/api/runs", None), ("GET", "/api/runs/0", None), ("GET", "/api/runs/0/kernels?layer=conv1", None),
    ("GET", "/api/runs/0/probe", None), ("GET", "/api/runs/0/featuremaps?layer=conv1&probe=0", None),
]


def page_load(client: httpx.Client) -> tuple[float, int]:
    start, size = time.perf_counter(), 0
    for method, url, body in PAGE_REQUESTS:
        response = client.request(method, url, json=body)
        response.raise_for_status()
        size += len(response.content)
    return time.perf_counter() - start, size


def bench_run(run_path: Path, *, browser: bool) -> None:
    from kernelscope.serve import create_app
    from kernelscope.train.rundir import load_run

    print("2. a run's page load: 20 epochs, 64 first-layer kernels of 7x7, 16 probe images (goal < 2 s)")

    def direct():
        run = load_run(run_path)
        run.kernels(20)
        run.probe()
        run.feature_maps(20)

    t_direct = median_time(direct, runs=5, warmup=1)
    cold = []
    for _ in range(5):
        with Server(create_app([run_path])) as server, httpx.Client(base_url=server.url) as client:
            t, size = page_load(client)
            cold.append(t)
    with Server(create_app([run_path], atlas_n_null=300)) as server, httpx.Client(base_url=server.url,
                                                                                   timeout=120) as client:
        t_warm = median_time(lambda: page_load(client), runs=5, warmup=1)
        t0 = time.perf_counter()
        for epoch in range(21):
            client.get(f"/api/runs/0/kernels?layer=conv1&epoch={epoch}").raise_for_status()
        t_slider = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.get("/api/runs/0/atlas?layer=conv1").raise_for_status()
        t_atlas = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.get("/api/runs/0/atlas?layer=conv1").raise_for_status()
        t_atlas_cached = time.perf_counter() - t0
        t_browser = browser_load(server.url) if browser else None
    t_cold = statistics.median(cold)
    print(f"   page load, cold (fresh app), median of 5: {1e3 * t_cold:7.1f} ms for {size / 1024:.0f} kB of responses "
          f"({'meets' if t_cold < 2 else 'MISSES'} the 2 s goal)")
    print(f"   page load, warm (cached arrays):          {1e3 * t_warm:7.1f} ms")
    print(f"   baseline: the same arrays read with load_run: {1e3 * t_direct:7.1f} ms "
          f"(cold page load / baseline = {t_cold / t_direct:.1f})")
    print(f"   epoch slider: all 21 snapshots' kernels, one request each: {1e3 * t_slider:7.1f} ms "
          f"({1e3 * t_slider / 21:.1f} ms per step)")
    print(f"   atlas of the 64 kernels (background, 300 nulls per control): first {t_atlas:.2f} s, "
          f"cached {1e3 * t_atlas_cached:.1f} ms")
    if t_browser is not None:
        print(f"   in chromium: navigation until the kernel grid and feature maps are drawn: {1e3 * t_browser:.0f} ms "
              f"(median of 3, run tab opened by #runs)")


def browser_click(url: str) -> None:
    """In chromium: a 64x64 input and a 15x15 kernel typed in; a click on an output cell until its trace is drawn."""
    executable = shutil.which("chromium")
    if executable is None:
        return
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)
    x = "; ".join(" ".join(str(v) for v in row) for row in rng.integers(0, 256, (64, 64)))
    k = "; ".join(" ".join(str(v) for v in row) for row in rng.integers(-4, 5, (15, 15)))
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    times, in_page = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url + "/")
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#in-padding", "same")
            page.fill("#in-kernel", k)
            page.fill("#in-input", x)
            page.wait_for_selector("#output-caption:has-text('Output 64x64')")
            for i in range(7):
                row, col = 5 + 7 * i, 60 - 7 * i
                t0 = time.perf_counter()
                page.click(f"#grid-output .cell[data-row='{row}'][data-col='{col}']")
                page.wait_for_selector(f"#explain-title:has-text('out[{row}, {col}]')")
                times.append(time.perf_counter() - t0)
                in_page.append(float(page.get_attribute("#explain-panel", "data-latency-ms")))
            redraws = []
            for i in range(7):  # an edit: the whole operation recomputed and its grids redrawn
                page.fill("#in-stride", "1" if i % 2 else "2")
                shape = "64x64" if i % 2 else "32x32"
                page.wait_for_selector(f"#output-caption:has-text('Output {shape}')")
                redraws.append(float(page.get_attribute("#op-grids", "data-latency-ms")))
        finally:
            browser.close()
    t, t_page = statistics.median(times[2:]), statistics.median(in_page[2:])
    print(f"   in chromium: a click on an output cell of a 64x64 'same' operation with a 15x15 kernel, until its "
          f"window, 225 products and sum are drawn: {t_page:.0f} ms measured in the page (click event to drawn), "
          f"{1e3 * t:.0f} ms seen by Playwright (its own click and polling included); medians of 5 after 2 warm-ups")
    print(f"   in chromium: an edit (stride 1 <-> 2) of that operation, request and redraw of every grid: "
          f"{statistics.median(redraws[2:]):.0f} ms in the page (median of 5; the page waits 120 ms after the last "
          f"keystroke before it asks)\n")


def browser_load(url: str) -> float | None:
    executable = shutil.which("chromium")
    if executable is None:
        print("   (chromium not installed: no browser timing)")
        return None
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            for _ in range(3):
                page = browser.new_page()
                t0 = time.perf_counter()
                page.goto(url + "/#runs")
                page.wait_for_selector("#kernel-grid .kcell", timeout=30_000)
                page.wait_for_selector("#maps-grid .kcell", timeout=30_000)
                times.append(time.perf_counter() - t0)
                page.close()
        finally:
            browser.close()
    return statistics.median(times)


NETWORKS = [("mobilenet_v2-imagenet", "224 px, 52 conv layers"), ("dlib-face-resnet", "150 px, 29 conv layers")]


def bench_network() -> None:
    """Chromium: the network view's load (cold and warm) and click-a-cell latency for two 150-224 px networks."""
    executable = shutil.which("chromium")
    print("3. the network view in chromium (goal: a 150-224 px network loads in < 3 s)")
    if executable is None:
        print("   (chromium not installed: no browser timing)")
        return
    from playwright.sync_api import sync_playwright

    from kernelscope.serve import create_app

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            for name, what in NETWORKS:
                with Server(create_app([], sources=[name])) as server:
                    loads, in_page = [], []
                    for _ in range(3):  # the first is cold: model read and forward pass; then cached maps
                        page = browser.new_page(viewport={"width": 1300, "height": 1000})
                        t0 = time.perf_counter()
                        page.goto(server.url + "/#network")
                        page.wait_for_selector("#net-maps[data-load-ms]", timeout=60_000)
                        loads.append(time.perf_counter() - t0)
                        in_page.append(float(page.get_attribute("#net-maps", "data-load-ms")))
                        if len(loads) < 3:
                            page.close()
                    layers = page.eval_on_selector_all(".net-layer[data-layer]", "cs => cs.map(c => c.dataset.layer)")
                    clicks, click_page = [], []
                    for i, layer in enumerate(layers[1 :: max(1, len(layers) // 6)][:6]):
                        canvas = page.locator(f"canvas.net-map[data-layer='{layer}']").first
                        box = canvas.bounding_box()
                        t0 = time.perf_counter()
                        canvas.click(position={"x": box["width"] * (0.3 + 0.1 * i), "y": box["height"] * 0.5})
                        page.wait_for_selector("#cell-panel[data-ready='1']", timeout=60_000)
                        clicks.append(time.perf_counter() - t0)
                        click_page.append(float(page.get_attribute("#cell-panel", "data-click-ms")))
                        agrees = page.text_content("#cell-check").startswith("\u2713")
                        if not agrees:
                            print(f"   !! {layer}: the explained total differs from the network's output")
                    page.close()
                print(f"   {name} ({what}): load cold {loads[0]:.2f} s ({in_page[0] / 1e3:.2f} s in the page), "
                      f"warm {statistics.median(loads[1:]):.2f} s; "
                      f"{'meets' if loads[0] < 3 else 'MISSES'} the 3 s goal")
                print(f"   {'':{len(name)}}  click a cell until its explanation is drawn: median "
                      f"{statistics.median(clicks[1:]) * 1e3:.0f} ms ({statistics.median(click_page[1:]):.0f} ms in the "
                      f"page) over {len(clicks) - 1} cells of different layers after one warm-up")
        finally:
            browser.close()
    print("   load = navigation to /#network until every conv layer's maps are drawn (8 channels per layer, "
          "sample:astronaut); in the page = the maps request and drawing alone\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-browser", action="store_true", help="skip the chromium page-load timing")
    parser.add_argument("--only-network", action="store_true", help="only the network view's timings (3.)")
    args = parser.parse_args()
    print("kernelscope explorer benchmark (2 shared CPU cores: timings are noisy)\n")
    if args.only_network:
        bench_network()
        return
    from kernelscope.serve import create_app

    with Server(create_app()) as server, httpx.Client(base_url=server.url) as client:
        bench_operation(client)
        if not args.no_browser:
            browser_click(server.url)
    with tempfile.TemporaryDirectory(prefix="kernelscope-bench-serve-") as tmp:
        run_path = write_synthetic_run(Path(tmp) / "run")
        bench_run(run_path, browser=not args.no_browser)
    if not args.no_browser:
        bench_network()


if __name__ == "__main__":
    main()
