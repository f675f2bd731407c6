"""`kernelscope kernels list|show`, `kernelscope images`, `kernelscope filter`: output, figures, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kernelscope.kernels import filter_image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and len(result.output.strip().splitlines()) == 1, result.output
    if message.endswith("?"):  # suggestions are followed by the list of valid names
        assert error_lines[0].startswith(f"Error: {message} (valid: "), result.output
    else:
        assert error_lines[0] == f"Error: {message}", result.output


def test_kernels_list_all_and_by_family(cli_runner):
    result = cli_runner("kernels", "list")
    assert result.exit_code == 0, result.output
    assert "sobel_x" in result.output and "positive where intensity increases to the right" in result.output
    assert "params: sigma=1.0, size=None" in result.output
    gabor = cli_runner("kernels", "list", "--family", "gabor", "--json")
    names = [row["name"] for row in json.loads(gabor.output)]
    assert names == ["gabor", "gabor_odd"]
    bad = cli_runner("kernels", "list", "--family", "edges")
    assert bad.exit_code == 2 and "Invalid value for '--family'" in bad.output


def test_kernels_show_prints_the_textbook_matrix(cli_runner):
    result = cli_runner("kernels", "show", "sobel_x")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith("[")]
    assert rows == [["[", "-1", "0", "1", "]"], ["[", "-2", "0", "2", "]"], ["[", "-1", "0", "1", "]"]]
    box = cli_runner("kernels", "show", "box", "--param", "size=5")
    assert "1/25 x" in box.output
    spec = cli_runner("kernels", "show", "gaussian:sigma=2", "-p", "size=5", "--json")
    data = json.loads(spec.output)
    np.testing.assert_allclose(data["kernel"], np.outer(*[np.exp(-np.arange(-2, 3) ** 2 / 8)] * 2)
                               / np.exp(-np.arange(-2, 3) ** 2 / 8).sum() ** 2)
    assert data["params"]["sigma"] == 2 and data["family"] == "smoothing"


def test_kernels_show_writes_a_figure(cli_runner, tmp_path):
    out = tmp_path / "card.png"
    result = cli_runner("kernels", "show", "gabor", "-p", "theta=45deg", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert f"wrote {out}" in result.output


@pytest.mark.parametrize("args,message", [
    (("sobelx",), "unknown kernel 'sobelx'; did you mean 'sobel_x', 'sobel5_x', 'sobel_y'?"),
    (("gaussian", "-p", "sigma=-1"), "sigma must be a finite number > 0, got -1.0"),
    (("gaussian", "-p", "size=4"),
     "size must be an odd integer between 1 and 1001 (the kernel needs a centre pixel), got 4"),
    (("gaussian", "-p", "sigma"), "--param must be KEY=VALUE (like sigma=2 or theta=45deg), got 'sigma'"),
    (("laplacian", "-p", "size=5"), "kernel 'laplacian' has a fixed size (3, 3) and takes no parameters; got size"),
    (("sobel_x", "--out", "card.txt"),
     "--out: unsupported figure format '.txt' in 'card.txt' (use .png, .pdf, .svg, .jpg, .jpeg)"),
])
def test_kernels_show_errors(cli_runner, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = cli_runner("kernels", "show", *args, "--out", "card.png") if "--out" not in args else \
        cli_runner("kernels", "show", *args)
    assert_one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []  # nothing written when validation fails


def test_images_lists_samples(cli_runner):
    result = cli_runner("images")
    assert result.exit_code == 0
    assert "sample:camera" in result.output and "sample:grace_hopper" in result.output
    rows = json.loads(cli_runner("images", "--json").output)
    assert {"name": "china", "source": "scikit-learn", "description": "colour photo of a Chinese temple",
            "licence": "CC BY 2.0, danielbuechele on Flickr (sklearn.datasets.load_sample_images().DESCR)"} in rows


def test_filter_writes_one_figure_for_a_real_bundled_image(cli_runner, tmp_path):
    out = tmp_path / "fig" / "camera.png"  # missing parent directories are created
    maps = tmp_path / "maps.npz"
    result = cli_runner("filter", "sample:camera", "--kernels", "sobel_x,sobel_y,laplacian,gabor:theta=90deg",
                        "--magnitude", "--out", out, "--save-maps", maps)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)
    with Image.open(out) as figure:
        width, height = figure.size
    assert height > 5 * 200 and width > 400  # input + 4 kernel rows + magnitude row
    with np.load(maps) as archive:
        saved = dict(archive)
    assert sorted(saved) == sorted(["sobel_x", "sobel_y", "laplacian", "gabor:theta=1.5708",
                                          "sobel_magnitude"])
    expected = filter_image("sample:camera", "sobel_x")
    np.testing.assert_allclose(saved["sobel_x"], expected, atol=1e-5)
    np.testing.assert_allclose(saved["sobel_magnitude"],
                               np.hypot(expected, filter_image("sample:camera", "sobel_y")), atol=1e-5)
    assert "sobel magnitude" in result.output and f"wrote {out}" in result.output


def test_filter_colour_per_channel_and_user_file(cli_runner, tmp_path, rng):
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out.svg"
    result = cli_runner("filter", photo, "--kernels", "scharr_x,scharr_y", "--color", "per-channel",
                        "--padding-mode", "symmetric", "--mode", "convolve", "--scale", "each", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_text().lstrip().startswith("<?xml")
    maps = tmp_path / "maps.npz"
    result = cli_runner("filter", photo, "--kernels", "box", "--padding-mode", "constant", "--pad-value", "1",
                        "--out", tmp_path / "box.png", "--save-maps", maps)
    assert result.exit_code == 0, result.output
    with np.load(maps) as archive:
        box = archive["box"]
    expected = filter_image(photo, "box", padding_mode="constant", pad_value=1.0)
    np.testing.assert_allclose(box, expected, atol=1e-6)
    assert not np.allclose(expected, filter_image(photo, "box", padding_mode="zeros"))


@pytest.fixture
def bad_files(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[:60])
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "tiny.png")
    return tmp_path


@pytest.mark.parametrize("args,message", [
    (("sample:camera", "--kernels", "sobelx"), "unknown kernel 'sobelx'; did you mean 'sobel_x', 'sobel5_x', 'sobel_y'?"),
    (("sample:camra",), "unknown sample image 'camra'; did you mean 'camera'?"),
    (("trunc.png",), "image file 'trunc.png' is unreadable or truncated"),
    (("notes.png",), "image file 'notes.png' is not an image Pillow can read (PNG, JPEG, TIFF, BMP, GIF, WebP, ...)"),
    (("missing.png",), "image file 'missing.png' does not exist"),
    (("tiny.png", "--kernels", "sobel_x,gaussian:sigma=2"),
     "image 'tiny.png' of 4x4 pixels is smaller than the 17x17 kernel gaussian:sigma=2"),
    (("ok.png", "--kernels", "sobel_x,laplacian", "--magnitude"),
     "--magnitude needs an x/y pair among --kernels (like sobel_x,sobel_y or scharr_x,scharr_y); "
     "got sobel_x, laplacian"),
    (("ok.png", "--kernels", "sobel_x,,laplacian"),
     "--kernels must be a comma-separated list of kernel names, got 'sobel_x,,laplacian'"),
    (("ok.png", "--kernels", "gabor:frequency=0.9"), "frequency must be at most 0.5, got 0.9"),
    (("ok.png", "--save-maps", "maps.txt"), "--save-maps must name a .npz file, got 'maps.txt'"),
])
def test_filter_errors_are_one_line_and_write_nothing(cli_runner, bad_files, monkeypatch, args, message):
    monkeypatch.chdir(bad_files)
    (bad_files / "fig.png").write_bytes(b"previous figure")
    before = sorted(p.name for p in bad_files.iterdir())
    result = cli_runner("filter", *args, "--out", "fig.png")
    if message.endswith("unreadable or truncated"):
        assert result.exit_code == 2 and result.output.startswith(f"Error: {message} (")
        assert len(result.output.strip().splitlines()) == 1
    else:
        assert_one_line_error(result, message)
    assert sorted(p.name for p in bad_files.iterdir()) == before
    assert (bad_files / "fig.png").read_bytes() == b"previous figure"  # never clobbered


def test_filter_bad_out_and_choices(cli_runner, tmp_path):
    result = cli_runner("filter", "sample:camera", "--out", tmp_path)
    assert_one_line_error(result, f"--out: unsupported figure format '(none)' in {str(tmp_path)!r} "
                                  "(use .png, .pdf, .svg, .jpg, .jpeg)")
    result = cli_runner("filter", "sample:camera", "--out", tmp_path / "f.png", "--padding-mode", "mirror")
    assert result.exit_code == 2 and "Invalid value for '--padding-mode'" in result.output
    assert not (tmp_path / "f.png").exists()


def test_a_failure_while_drawing_leaves_no_half_written_figure(cli_runner, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, handle, **kwargs):
        handle.write(b"\x89PNG half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    result = cli_runner("filter", "sample:coins", "--kernels", "sobel_x", "--out", tmp_path / "f.png")
    assert result.exit_code == 1  # an unexpected exception: the CLI's one-line internal error
    assert result.stderr == ("Error: internal error: RuntimeError: disk full "
                             "(run with --debug for the traceback)\n")
    assert list(tmp_path.iterdir()) == []
