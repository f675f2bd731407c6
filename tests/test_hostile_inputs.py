"""Every command that reads a kind of input, fed each broken or hostile form of it (issue 21).

One table: commands x bad-input families (truncated .npz, 0-byte .npy/.npz, a .npy header that lies about its
size, an oversized .npy, object arrays, an oversized image, NaN/inf option values, bad --input-size, a negative
--epoch, an unwritable --out). Each must exit with status 2, print exactly one ``Error: ...`` line on stderr, no
traceback, and leave no output behind. The limits are documented in docs/security.md.
"""

from __future__ import annotations

import importlib.util
import io
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kernelscope.cli import cli

HERE = Path(__file__).resolve().parent


def _train_face_run(path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("_channels_conftest", HERE / "channels" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_face_run(path, epochs=1)


def _png(width: int, height: int, *, data: bool) -> bytes:
    """A grey PNG of ``width x height`` zeros (``data=False``: the header alone, nothing to decode)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * ((width + 1) * height), 9)) if data else b""
    return b"\x89PNG\r\n\x1a\n" + header + pixels + chunk(b"IEND", b"")


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train_face_run(tmp_path_factory.mktemp("hostile_run"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """The hostile files, by family."""
    folder = tmp_path_factory.mktemp("hostile_files")
    files = {}

    def put(name: str, content: bytes) -> None:
        (folder / name).write_bytes(content)
        files[name] = folder / name

    good = io.BytesIO()
    np.savez(good, images=np.zeros((4, 1, 25, 25), np.float32))
    put("truncated.npz", good.getvalue()[: len(good.getvalue()) // 2])
    put("empty.npy", b"")
    put("empty.npz", b"")
    put("lying.npy", _npy_header((100_000, 100_000)) + b"\0" * 64)  # promises 80 GB, holds 64 bytes
    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w") as archive:
        archive.writestr("images.npy", _npy_header((100_000, 100_000)) + b"\0" * 64)
    put("lying.npz", lying.getvalue())
    objects = io.BytesIO()
    np.save(objects, np.array([np.ones(2), np.ones(3)], dtype=object), allow_pickle=True)
    put("objects.npy", objects.getvalue())
    # an honest 2 GiB .npy, stored sparse (no disk used): refused from its header, never read
    header = _npy_header((1 << 28,))
    (folder / "huge.npy").write_bytes(header)
    with open(folder / "huge.npy", "r+b") as handle:
        handle.truncate(len(header) + (1 << 31))
    files["huge.npy"] = folder / "huge.npy"
    put("nan_images.npy", _nan_images())
    put("big.png", _png(12000, 12000, data=False))  # claims 144 megapixels
    put("plain.txt", b"not a folder")
    return files


def _nan_images() -> bytes:
    buffer = io.BytesIO()
    images = np.full((4, 1, 25, 25), 0.5, np.float32)
    images[0, 0, 0, 0] = np.nan
    np.save(buffer, images)
    return buffer.getvalue()


#: (id, arguments: files and OUT -> list, the one line's pattern). RUN is the trained run directory.
CASES = [
    # truncated .npz
    ("maps-truncated-npz", lambda f, o: ["maps", "RUN", "--images", f["truncated.npz"], "--out", o],
     r"cannot read images file '.*truncated.npz' as a .npz archive \(not a zip file, or truncated"),
    ("patches-truncated-npz", lambda f, o: ["patches", "RUN", "--images", f["truncated.npz"], "--out", o],
     r"as a .npz archive"),
    ("dissect-truncated-npz", lambda f, o: ["dissect", "RUN", "--masks", f["truncated.npz"], "--out", o],
     r"cannot read masks file '.*truncated.npz' as a .npz archive"),
    ("parts-truncated-npz", lambda f, o: ["parts", "RUN", "--masks", f["truncated.npz"], "--out", o],
     r"cannot read masks file '.*truncated.npz' as a .npz archive"),
    # 0-byte files
    ("explain-empty-npy", lambda f, o: ["explain", "--input", f["empty.npy"], "--kernel", "1"],
     r"--input: cannot read '.*empty.npy' as a .npy array \(No data left in file\)"),
    ("maps-empty-npy", lambda f, o: ["maps", "RUN", "--images", f["empty.npy"], "--out", o],
     r"cannot read images file '.*empty.npy' as a .npy array"),
    ("rf-empty-npz", lambda f, o: ["rf", "RUN", "--images", f["empty.npz"], "--out", o],
     r"as a .npz archive \(it is empty: 0 bytes\)"),
    ("dissect-empty-npy", lambda f, o: ["dissect", "RUN", "--masks", f["empty.npy"], "--out", o],
     r"cannot read masks file '.*empty.npy' as a .npy array"),
    # a header that lies about its size (would be a MemoryError)
    ("explain-lying-npy", lambda f, o: ["explain", "--input", f["lying.npy"], "--kernel", "1"],
     r"--input: cannot read '.*lying.npy' as a .npy array \(its header promises 80000000000 bytes"),
    ("maps-lying-npy", lambda f, o: ["maps", "RUN", "--images", f["lying.npy"], "--out", o],
     r"its header promises 80000000000 bytes, float64 of shape \(100000, 100000\), but only 64 follow it"),
    ("shift-lying-npz", lambda f, o: ["shift", "RUN", "--ood", f["lying.npz"], "--out", o],
     r"cannot read array 'images' of images file '.*lying.npz' as a .npy array \(its header promises"),
    ("parts-lying-npy", lambda f, o: ["parts", "RUN", "--masks", f["lying.npy"], "--out", o],
     r"its header promises 80000000000 bytes"),
    # an honest but oversized .npy (2 GiB): refused from its header
    ("explain-huge-npy", lambda f, o: ["explain", "--input", f["huge.npy"], "--kernel", "1"],
     r"--input: '.*huge.npy' is too large: its float64 array of shape \(268435456,\) is 2 GiB; at most 16 MiB"),
    ("patches-huge-npy", lambda f, o: ["patches", "RUN", "--images", f["huge.npy"], "--out", o],
     r"images file '.*huge.npy' is too large: .* is 2 GiB; at most 1 GiB of array data"),
    # object (ragged) arrays
    ("dissect-object-npy", lambda f, o: ["dissect", "RUN", "--masks", f["objects.npy"], "--out", o],
     r"masks file '.*objects.npy' as a .npy array \(it holds Python objects, dtype object"),
    ("parts-object-npy", lambda f, o: ["parts", "RUN", "--masks", f["objects.npy"], "--out", o],
     r"it holds Python objects"),
    ("maps-object-npy", lambda f, o: ["maps", "RUN", "--images", f["objects.npy"], "--out", o],
     r"it holds Python objects"),
    # NaN in the images
    ("maps-nan-images", lambda f, o: ["maps", "RUN", "--images", f["nan_images.npy"], "--out", o],
     r"images file '.*nan_images.npy' holds NaN or infinite values"),
    # an oversized image: refused from its header, before decoding
    ("filter-oversized-png", lambda f, o: ["filter", f["big.png"], "--kernels", "sobel_x", "--out", f"{o}/f.png"],
     r"image file '.*big.png' is too large: 12000x12000 = 144000000 pixels; at most 50000000 pixels"),
    # NaN / inf / zero option values
    ("maps-mean-nan", lambda f, o: ["maps", "RUN", "--mean", "nan", "--out", o], r"^Error: --mean must be a finite"),
    ("maps-std-zero", lambda f, o: ["maps", "RUN", "--std", "0", "--out", o], r"^Error: --std must be greater than 0"),
    ("patches-std-inf", lambda f, o: ["patches", "RUN", "--std", "inf", "--out", o], r"--std must be a finite"),
    ("shift-mean-inf", lambda f, o: ["shift", "RUN", "--mean", "-inf", "--out", o], r"--mean must be a finite"),
    # --input-size
    ("rf-input-size-zero", lambda f, o: ["rf", "RUN", "--input-size", "1", "0", "25", "--out", o],
     r"--input-size must be C H W, each at least 1; got 1 0 25"),
    ("rf-input-size-negative", lambda f, o: ["rf", "RUN", "--input-size", "-1", "25", "25", "--out", o],
     r"each at least 1; got -1 25 25"),
    ("rf-input-size-huge", lambda f, o: ["rf", "RUN", "--input-size", "3", "100000", "100000", "--out", o],
     r"--input-size 3 100000 100000 is too large: 30000000000 values; at most 3145728"),
    # a negative epoch (it silently meant the last one)
    ("atlas-epoch-negative", lambda f, o: ["atlas", "RUN", "--epoch", "-1", "--out", o],
     r"epoch must be 0 or more, got -1 \(omit it for the last recorded epoch, 1\)"),
    ("maps-epoch-negative", lambda f, o: ["maps", "RUN", "--epoch", "-2", "--out", o], r"epoch must be 0 or more"),
    # an unwritable --out (a path below a regular file)
    ("maps-unwritable-out", lambda f, o: ["maps", "RUN", "--out", f"{f['plain.txt']}/maps"], r"not a directory"),
    ("filter-unwritable-out", lambda f, o: ["filter", "sample:camera", "--kernels", "sobel_x", "--out",
                                            f"{f['plain.txt']}/f.png"], r"not a directory"),
]


@pytest.mark.parametrize("args,pattern", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_line_exit_2_and_leaves_nothing(args, pattern, bad, run_dir, tmp_path):
    out = tmp_path / "out"
    argv = [str(run_dir) if a == "RUN" else str(a) for a in args(bad, out)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert not out.exists() or list(out.rglob("*")) == []  # no partial output


def test_the_oversized_image_is_refused_before_any_pixel_is_decoded(bad, monkeypatch):
    from PIL import ImageFile

    from kernelscope.data.images import load_image
    from kernelscope.errors import KernelscopeError

    def decode(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    with pytest.raises(KernelscopeError, match="too large: 12000x12000"):
        load_image(bad["big.png"])


def test_an_image_just_over_the_limit_is_refused_and_one_at_it_is_read(tmp_path, monkeypatch):
    import kernelscope.data.images as images

    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100 * 100)
    (tmp_path / "at.png").write_bytes(_png(100, 100, data=True))
    (tmp_path / "over.png").write_bytes(_png(101, 100, data=True))
    assert images.load_image(tmp_path / "at.png").shape == (100, 100)
    with pytest.raises(images.KernelscopeError, match=r"101x100 = 10100 pixels; at most 10000 pixels"):
        images.load_image(tmp_path / "over.png")
