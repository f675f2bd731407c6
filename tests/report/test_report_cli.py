"""`kernelscope report`: a thin layer over build_report, clean errors with exit status 2."""

from __future__ import annotations

import os

from report_helpers import write_fake_run


def test_report_command_writes_the_file(fake_run, tmp_path, cli_runner):
    out = tmp_path / "r.html"
    result = cli_runner("report", fake_run, "--out", out, "--only", "training,kernels")
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (3 of 3 sections shown" in result.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # shareable, not the 0600 of a temporary file


def test_report_command_exports_figures(fake_run, tmp_path, cli_runner):
    figures = tmp_path / "figs"
    result = cli_runner("report", fake_run, "--out", tmp_path / "r.html", "--only", "training,kernels",
                        "--figures", figures)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in figures.iterdir()) == ["kernels-1.png", "kernels-2.png", "kernels-3.png",
                                                         "training-1.png"]
    assert (figures / "training-1.png").read_bytes().startswith(b"\x89PNG")


def test_report_command_notes_missing_sections(tmp_path, cli_runner):
    run = write_fake_run(tmp_path / "run", status="failed")
    result = cli_runner("report", run, "--out", tmp_path / "r.html", "--only", "featuremaps")
    assert result.exit_code == 0
    assert "note: run: this run is incomplete; the sections below show what was recorded" in result.output


def test_report_command_on_a_directory_that_is_not_a_run(tmp_path, cli_runner):
    result = cli_runner("report", tmp_path, "--out", tmp_path / "r.html")
    assert result.exit_code == 2
    assert result.output == (f"Error: {str(tmp_path)!r} is not a run directory: it has no "
                             "manifest.json (write one with `kernelscope train --out DIR`)\n")
    assert not (tmp_path / "r.html").exists()


def test_report_command_unknown_section(fake_run, tmp_path, cli_runner):
    result = cli_runner("report", fake_run, "--out", tmp_path / "r.html", "--only", "atlsa")
    assert result.exit_code == 2
    assert result.output == ("Error: analyses (--only): unknown section 'atlsa'; did you mean 'atlas', 'parts', "
                             "'patches'? (valid: atlas, dissect, featuremaps, kernels, operation, parts, patches, "
                             "receptive, shift, training, visualize)\n")
