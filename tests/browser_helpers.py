"""Debian's chromium for the browser tests (the report's and the explorer's): where it is, how it is started."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium(what: str) -> str:
    """Debian's chromium, or a loud failure naming ``what`` was not checked (a skip only when
    KERNELSCOPE_ALLOW_NO_BROWSER=1 says so)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("KERNELSCOPE_ALLOW_NO_BROWSER") == "1":
            pytest.skip("chromium is not installed and KERNELSCOPE_ALLOW_NO_BROWSER=1")
        pytest.fail(f"BROWSER TEST NOT RUN: Debian's `chromium` is not installed, so {what} was not checked in a "
                    "browser. Install it with `make browser` (apt-get install -y chromium), or set "
                    "KERNELSCOPE_ALLOW_NO_BROWSER=1 to skip on purpose.")
    return path
