"""Reading matrices from command-line text and files."""

from __future__ import annotations

import numpy as np
import pytest

from kernelscope.errors import KernelscopeError
from kernelscope.ops.matrices import parse_matrix


def test_inline_forms():
    assert parse_matrix("1 2; 3 4").tolist() == [[1, 2], [3, 4]]
    assert parse_matrix("1,2\n3,4").tolist() == [[1, 2], [3, 4]]
    assert parse_matrix(" -1  +2 ;3 4 ; ").tolist() == [[-1, 2], [3, 4]]
    assert parse_matrix("1 2.5").dtype == np.float64
    assert parse_matrix("1e2 0").tolist() == [[100.0, 0.0]]
    assert parse_matrix("1 2 | 3 4").tolist() == [[[[1, 2]], [[3, 4]]]]


def test_files(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6).reshape(1, 1, 2, 3))
    (tmp_path / "b.csv").write_text("1,2,3\n4,5,6\n")
    (tmp_path / "c.txt").write_text("# a comment\n1 2\n3   4\n")
    assert parse_matrix(str(tmp_path / "a.npy")).shape == (1, 1, 2, 3)
    assert parse_matrix(tmp_path / "b.csv").tolist() == [[1, 2, 3], [4, 5, 6]]
    assert parse_matrix(str(tmp_path / "c.txt")).tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("text,pattern", [
    ("1 2; 3", r"^--input: row 2 has 1 number but row 1 has 2 numbers; every row needs the same count$"),
    ("1 x; 3 4", r"^--input: 'x' is not a number \(row 1, column 2\)$"),
    ("1 nan", r"^--input: only finite numbers are allowed; got '1 nan'$"),
    (" ; ", r"^--input: got no numbers in ' ; '; write rows like '1 2 3; 4 5 6'$"),
    ("1 2 | 3", r"^--input: channels separated by '\|' must have the same shape; got 1x2, 1x1$"),
    ("missing.npy", r"^--input: no such file 'missing.npy'$"),
])
def test_parse_errors(text, pattern):
    with pytest.raises(KernelscopeError, match=pattern):
        parse_matrix(text, "--input")


def test_bad_files(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(KernelscopeError, match=r"^--kernel: cannot read '.*bad.npy' as a .npy array"):
        parse_matrix(str(tmp_path / "bad.npy"), "--kernel")
    (tmp_path / "r.csv").write_text("1,2\n3\n")
    with pytest.raises(KernelscopeError, match=r"^--kernel \(r.csv\): row 2 has 1 number"):
        parse_matrix(str(tmp_path / "r.csv"), "--kernel")


@pytest.mark.parametrize("content,reason", [
    (b"", r"No data left in file"),  # 0 bytes: numpy raises EOFError
    (None, r"its header promises 800 bytes, float64 of shape \(100,\), but only 760 follow it"),  # cut in its data
])
def test_empty_and_truncated_npy_name_the_file(tmp_path, content, reason):
    import io

    path = tmp_path / "cut.npy"
    if content is None:
        buffer = io.BytesIO()
        np.save(buffer, np.arange(100.0))
        content = buffer.getvalue()[:-40]
    path.write_bytes(content)
    with pytest.raises(KernelscopeError, match=rf"^--input: cannot read '.*cut.npy' as a .npy array \(.*({reason})"):
        parse_matrix(str(path), "--input")
