"""The report in a real browser (Debian's chromium driven by Playwright): it loads offline, makes no network
request, logs no console error, every figure decodes, and a hostile class name is shown as text.

When chromium is missing this test FAILS loudly (install it with `make browser`), unless
KERNELSCOPE_ALLOW_NO_BROWSER=1 says that skipping is intended.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from report_helpers import HOSTILE

from browser_helpers import CHROMIUM_ARGS, chromium
from kernelscope.report.build import build_report

pytestmark = pytest.mark.browser

def open_in_browser(path: Path, screenshot: Path | None = None) -> dict:
    """Load ``path`` in headless chromium; return requests, console errors, images and the visible text."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail("BROWSER TEST NOT RUN: the `playwright` package is missing (pip install -e '.[test]')")
    executable = chromium("the HTML report")
    requests: list[str] = []
    console_errors: list[str] = []
    page_errors: list[str] = []
    failed: list[tuple[str, str]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("requestfailed", lambda request: failed.append((request.url, request.failure or "")))
            page.goto(path.resolve().as_uri(), wait_until="load")
            images = page.evaluate("""() => Array.from(document.images).map(img => ({
                complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
                scheme: img.src.split(':')[0]}))""")
            info = {
                "images": images,
                "text": page.inner_text("body"),
                "scripts": page.evaluate("() => document.scripts.length"),
                "alert_fired": page.evaluate("() => window.__owned === true"),
                "title": page.title(),
            }
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    info.update(requests=requests, console_errors=console_errors, page_errors=page_errors, failed=failed)
    return info


def test_report_in_a_real_browser(fake_run, tmp_path):
    out = tmp_path / "report.html"
    build_report(fake_run, out, analyses=["training", "kernels", "featuremaps"], strict=True, progress=False)
    shot = Path(os.environ.get("KERNELSCOPE_SCREENSHOT", tmp_path / "report.png"))
    info = open_in_browser(out, screenshot=shot)
    assert info["console_errors"] == []
    assert info["page_errors"] == []
    assert info["requests"][0] == out.resolve().as_uri()
    assert all(url.startswith("data:") for url in info["requests"][1:]), info["requests"]
    assert info["failed"] == []
    assert len(info["images"]) == 7
    for image in info["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["scheme"] == "data"
    assert HOSTILE in info["text"]  # shown as text ...
    assert info["scripts"] == 0  # ... never turned into a script element
    assert shot.stat().st_size > 10_000


def test_browser_blocks_a_network_request_that_slipped_in(tmp_path):
    """The Content-Security-Policy is what makes 'no network request' hold: check that it bites."""
    from kernelscope.report import html as H

    page = H.document("csp", [H.section("s", "S", H.Html('<img src="http://127.0.0.1:9/x.png" alt="x">'))])
    out = tmp_path / "csp.html"
    out.write_text(page)
    info = open_in_browser(out)
    # chromium announces the request, then the policy blocks it before anything leaves the machine
    assert info["failed"] == [("http://127.0.0.1:9/x.png", "csp")]
    assert any("violates the following Content Security Policy directive" in message
               for message in info["console_errors"])
