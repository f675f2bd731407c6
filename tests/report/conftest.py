"""Fixtures of the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import write_fake_run


@pytest.fixture
def fake_run(tmp_path) -> Path:
    return write_fake_run(tmp_path / "run")
