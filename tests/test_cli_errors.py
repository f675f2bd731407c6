"""The CLI's error contract: one ``Error: ...`` line for every failure, a traceback only on request.

Usage errors, library errors and the failures a user causes (unwritable paths, a full
disk, a full or closed standard output, damaged archives, decompression bombs) exit 2;
any other exception is a bug: ``Error: internal error: ...`` and exit status 1.
"""

from __future__ import annotations

import errno
import importlib
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import pytest
from click.testing import CliRunner

from kernelscope.cli import cli, user_error_message

# the module (the package's attribute of that name is the function)
ENGINE = importlib.import_module("kernelscope.ops.explain")

EXPLAIN = ["explain", "--input", "1 2; 3 4", "--kernel", "1"]
HINT = "(run with --debug for the traceback)"


def invoke(*args: str, env: dict[str, str] | None = None):
    """Run the CLI in-process, as a user would (exceptions not re-raised by the runner)."""
    return CliRunner().invoke(cli, list(args), env=env)


def run(*args: str, stdout=subprocess.PIPE, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m kernelscope ...`` in a child process."""
    env = {**os.environ, "KERNELSCOPE_PROGRESS": "0"}
    env.pop("KERNELSCOPE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "kernelscope", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120, env=env, **kwargs)


def failing(error: BaseException):
    def explain(*args, **kwargs):
        raise error
    return explain


# ---------------------------------------------------------------------------------------- in process


def test_a_library_error_is_one_line_with_exit_2():
    result = invoke("explain", "--input", "1 2; 3 4", "--kernel", "1", "--stride", "0")
    assert result.exit_code == 2
    assert result.stderr == "Error: stride must be a positive int or a pair of positive ints; got 0\n"


def test_a_usage_error_is_exit_2():
    result = invoke("explain", "--input", "1")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: Missing option '--kernel'."


def test_a_bug_is_one_line_with_exit_1(monkeypatch):
    monkeypatch.setattr(ENGINE, "explain", failing(RuntimeError("boom\nsecond line")))
    result = invoke(*EXPLAIN)
    assert result.exit_code == 1
    assert result.stderr == f"Error: internal error: RuntimeError: boom {HINT}\n"
    assert "Traceback" not in result.output


def test_a_bug_without_a_message_names_its_type(monkeypatch):
    monkeypatch.setattr(ENGINE, "explain", failing(KeyError()))
    result = invoke(*EXPLAIN)
    assert (result.exit_code, result.stderr) == (1, f"Error: internal error: KeyError {HINT}\n")


@pytest.mark.parametrize("how", ["option", "env"])
def test_debug_shows_the_traceback_and_keeps_the_exit_status(monkeypatch, how):
    monkeypatch.setattr(ENGINE, "explain", failing(RuntimeError("boom")))
    if how == "option":
        result = invoke("--debug", *EXPLAIN)
    else:
        result = invoke(*EXPLAIN, env={"KERNELSCOPE_DEBUG": "1"})
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "RuntimeError: boom" in lines
    assert lines[-1] == f"Error: internal error: RuntimeError: boom {HINT}"


def test_debug_off_when_the_variable_is_0(monkeypatch):
    monkeypatch.setattr(ENGINE, "explain", failing(RuntimeError("boom")))
    result = invoke(*EXPLAIN, env={"KERNELSCOPE_DEBUG": "0"})
    assert result.stderr == f"Error: internal error: RuntimeError: boom {HINT}\n"


@pytest.mark.parametrize("error,message", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out.png"),
     "permission denied: '/data/out.png'; choose a path you may use or change its permissions"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/maps.npz"),
     "no space left on device writing '/data/maps.npz'; free some space or write elsewhere"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"),
     "no space left on device; free some space or write elsewhere"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/cd/x.png"),
     "read-only file system: '/mnt/cd/x.png'; write elsewhere"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), "is a directory: '/tmp'"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such/dir/x"),
     "no such file or directory: '/no/such/dir/x'"),
    (zipfile.BadZipFile("File is not a zip file"),
     "a file is not a valid .npz (zip) archive or is truncated (File is not a zip file)"),
    (EOFError("No data left in file"), "a file ended early: it is empty or truncated (No data left in file)"),
])
def test_failures_a_user_causes_are_one_line_with_exit_2(monkeypatch, error, message):
    monkeypatch.setattr(ENGINE, "explain", failing(error))
    result = invoke(*EXPLAIN)
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")


def test_other_os_errors_are_internal(monkeypatch):
    monkeypatch.setattr(ENGINE, "explain",
                        failing(OSError(errno.EBADF, "Bad file descriptor")))
    result = invoke(*EXPLAIN)
    assert (result.exit_code, result.stderr) == (
        1, f"Error: internal error: OSError: [Errno 9] Bad file descriptor {HINT}\n")


def test_a_decompression_bomb_is_a_user_error():
    from PIL import Image

    bomb = Image.DecompressionBombError("Image size (400000000 pixels) exceeds limit of 178956970 pixels, "
                                        "could be decompression bomb DOS attack.")
    assert user_error_message(bomb) == (
        "image too large to open safely: Image size (400000000 pixels) exceeds limit of 178956970 pixels, "
        "could be decompression bomb DOS attack.")


def test_an_empty_npy_is_named(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    result = invoke("explain", "--input", str(tmp_path / "empty.npy"), "--kernel", "1")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: --input: cannot read '{tmp_path / 'empty.npy'}' as a .npy array "
                             "(No data left in file)\n")


@pytest.mark.parametrize("content,message", [
    (b"PK\x03\x04 truncated", "a file is not a valid .npz (zip) archive or is truncated (File is not a zip file)"),
    (b"", "a file ended early: it is empty or truncated (No data left in file)"),
])
def test_a_damaged_npz_read_by_numpy(monkeypatch, tmp_path, content, message):
    import numpy as np

    path = tmp_path / "maps.npz"
    path.write_bytes(content)

    def explain(*args, **kwargs):  # a reader without its own guard (like data/face_masks.py)
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            return data[data.files[0]]

    monkeypatch.setattr(ENGINE, "explain", explain)
    result = invoke(*EXPLAIN)
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")


def test_a_disk_full_while_writing_a_figure(monkeypatch, tmp_path):
    import kernelscope.report.figures.common as common

    def full(fig, path, dpi=100):
        from kernelscope._io import atomic_write

        def write(handle):
            raise OSError(errno.ENOSPC, "No space left on device")
        return atomic_write(path, write)

    monkeypatch.setattr(common, "save_figure", full)
    out = tmp_path / "k.png"
    result = invoke("kernels", "show", "sobel_x", "--out", str(out))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: no space left on device writing '{out}'; free some space or write "
                             "elsewhere\n")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


# ---------------------------------------------------------------------------------------- subprocesses


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels (its image data is never reached)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + end


def test_a_decompression_bomb_image(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))
    result = run("filter", str(bomb), "--kernels", "sobel_x", "--out", str(tmp_path / "f.png"))
    assert result.returncode == 2
    assert result.stderr == ("Error: image too large to open safely: Image size (400000000 pixels) exceeds limit "
                             "of 178956970 pixels, could be decompression bomb DOS attack.\n")
    assert result.stdout == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [EXPLAIN, ["kernels", "list"], ["explain", "--input", "1 2; 3 4", "--kernel",
                                                                 "1", "--json"]])
def test_a_full_standard_output(args):
    with open("/dev/full", "w") as full:
        result = run(*args, stdout=full)
    assert result.returncode == 2
    assert result.stderr == "Error: cannot write to standard output: No space left on device\n"


def test_a_closed_standard_output():
    read, write = os.pipe()
    os.close(read)  # nobody will ever read: every write fails with EPIPE
    try:
        result = run("kernels", "list", stdout=write)
    finally:
        os.close(write)
    assert result.returncode == 2
    assert result.stderr == "Error: cannot write to standard output: Broken pipe\n"


def test_an_unwritable_output_path():
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("needs sysfs")
    result = run("kernels", "show", "sobel_x", "--out", "/sys/kernelscope-test.png")
    assert result.returncode == 2
    assert result.stderr in (
        "Error: permission denied: '/sys/kernelscope-test.png'; choose a path you may use or change its "
        "permissions\n",
        "Error: read-only file system: '/sys/kernelscope-test.png'; write elsewhere\n")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("statement", [
    "print('a line')",  # fails inside the command, with no frame holding the stream
    "sys.stdout.write('no newline, so still buffered when the command returns')",  # fails at exit
])
def test_plain_prints_to_a_full_standard_output(statement):
    code = ("import sys, types, click\n"
            "import kernelscope.cli as c\n"
            "@click.command()\n"
            f"def hello():\n    {statement}\n"
            "module = types.ModuleType('hello_module'); module.hello = hello\n"
            "sys.modules['hello_module'] = module\n"
            "c.COMMANDS['hello'] = ('hello_module', 'hello', 'print without flushing')\n"
            "c.main(['hello'])\n")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=120)
    assert result.returncode == 2
    assert result.stderr == "Error: cannot write to standard output: No space left on device\n"
