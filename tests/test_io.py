"""Atomic writes: permissions, errors that name the file, and JSON that is always valid."""

from __future__ import annotations

import errno
import json
import os
import stat

import numpy as np
import pytest

from kernelscope import _io
from kernelscope._io import (
    atomic_write,
    dumps_json,
    finite_or_none,
    json_safe,
    write_bytes,
    write_json,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o000])
def test_written_files_get_0666_minus_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_bytes(tmp_path / "a.bin", b"x")
        assert _io._umask() == umask
    finally:
        os.umask(old)
    assert _mode(path) == 0o666 & ~umask


def test_overwriting_keeps_the_new_mode_and_content(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert _mode(path) == 0o666 & ~_io._umask()
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "out.npz"
    write_bytes(path, b"old")

    def full(handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"No space left on device: '.*out\.npz'") as info:
        atomic_write(path, full)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_a_permission_error_naming_the_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"Permission denied: '.*ro/report\.html'"):
            write_bytes(folder / "report.html", b"x")
    finally:
        folder.chmod(0o700)


def test_json_is_strict(tmp_path):
    obj = {"loss": float("nan"), "best": np.float32(np.inf), "n": np.int64(3), "ok": np.bool_(True),
           "values": np.array([1.0, np.nan, -np.inf]), "pair": (1, float("-inf")), "path": tmp_path}
    path = write_json(tmp_path / "x.json", obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "best": None, "n": 3, "ok": True,
                                "values": [1.0, None, None], "pair": [1, None], "path": str(tmp_path)}
    assert json.loads(dumps_json(obj)) == json_safe(obj)


@pytest.mark.parametrize("value,expected", [
    (None, None), (1, 1.0), (np.float16(0.5), 0.5), (float("nan"), None), (np.inf, None),
    (-np.inf, None), (np.int64(-2), -2.0), ("2.5", 2.5),
])
def test_finite_or_none(value, expected):
    assert finite_or_none(value) == expected


def test_json_refuses_what_it_cannot_write():
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        dumps_json({"x": object()})
