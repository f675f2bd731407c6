"""The report of a run directory: sections for what is there, clear notes for what is not."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from report_helpers import HOSTILE, write_fake_run

from kernelscope.errors import KernelscopeError
from kernelscope.report.build import ANALYSES, build_report
from kernelscope.train.rundir import inspect_run

RUN_SECTIONS = ["training", "kernels", "featuremaps"]


def test_report_of_a_complete_run(fake_run, tmp_path):
    out = tmp_path / "report.html"
    result = build_report(fake_run, out, analyses=RUN_SECTIONS, strict=True, progress=False)
    assert result.path == out
    assert result.status == {"run": "ok", "training": "ok", "kernels": "ok", "featuremaps": "ok"}
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # 1 training curve, 3 kernel figures (init, end, evolution), 2 probe images + the epoch-0 control
    assert page.count("<img ") == 1 + 3 + 3
    assert "chance level 1/2 = 0.5" in page
    assert "after epoch 3" in page
    assert "How computed" in page


def test_hostile_class_name_is_escaped(fake_run, tmp_path):
    out = tmp_path / "report.html"
    build_report(fake_run, out, analyses=RUN_SECTIONS, strict=True, progress=False)
    page = out.read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in page
    assert HOSTILE not in page


def test_kernel_drift_is_reported_against_initialisation(fake_run, tmp_path):
    out = tmp_path / "report.html"
    build_report(fake_run, out, analyses=["kernels"], strict=True, progress=False)
    page = out.read_text()
    match = re.search(r"after epoch 3: median ([0-9.e+-]+)", page)
    assert match
    inv = inspect_run(fake_run)
    k0, k3 = inv.kernels(0)["conv1"], inv.kernels(3)["conv1"]
    expected = np.median(np.linalg.norm((k3 - k0).reshape(8, -1), axis=1) / np.linalg.norm(k0.reshape(8, -1), axis=1))
    assert float(match.group(1)) == pytest.approx(expected, rel=5e-3)


def test_partial_run_says_what_is_missing(tmp_path):
    run = write_fake_run(tmp_path / "crashed", epochs=3, status="running")
    (run / "kernels" / "epoch_002.npz").unlink()
    (run / "kernels" / "epoch_003.npz").write_bytes(b"PK\x03\x04 truncated")
    for f in (run / "featuremaps").iterdir():
        f.unlink()
    out = tmp_path / "r.html"
    result = build_report(run, out, analyses=RUN_SECTIONS, strict=True, progress=False)
    problems = "\n".join(result.problems)
    assert "status is 'running'" in problems
    assert "kernels/epoch_002.npz" in problems
    assert "epoch_003.npz is unreadable" in problems
    assert "featuremaps/epoch_*.npz is missing" in problems
    assert result.status["run"] == "partial"
    assert result.status["kernels"] == "ok"  # epochs 0 and 1 are still shown
    assert result.status["featuremaps"] == "unavailable"
    assert result.missing()["featuremaps"] == ("no feature-map snapshots in this run "
                                               "(featuremaps/epoch_*.npz is missing)")
    page = out.read_text()
    assert "after epoch 1" in page
    assert "kernels/epoch_002.npz" in page


def test_run_without_initial_snapshot_is_partial(tmp_path):
    run = write_fake_run(tmp_path / "r", epochs=2)
    (run / "kernels" / "epoch_000.npz").unlink()
    result = build_report(run, tmp_path / "r.html", analyses=["kernels"], strict=True, progress=False)
    assert result.status["kernels"] == "partial"
    assert "kernels/epoch_000.npz" in result.missing()["kernels"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: (d / "manifest.json").unlink(), "is not a run directory: it has no manifest.json"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json is unreadable (JSONDecodeError"),
    (lambda d: _patch_manifest(d, format_version=None), "has format_version None, which this kernelscope 0.1.0 "
                                                        "cannot read (supported: 1)"),
    (lambda d: _patch_manifest(d, format_version=7), "has format_version 7, which this kernelscope 0.1.0 "
                                                        "cannot read (supported: 1)"),
    (lambda d: _patch_manifest(d, format="something-else"), "has format 'something-else'; expected "
                                                             "'kernelscope-run'"),
])
def test_not_a_usable_run(fake_run, tmp_path, edit, message):
    edit(fake_run)
    with pytest.raises(KernelscopeError, match=re.escape(message)):
        build_report(fake_run, tmp_path / "x.html", progress=False)
    assert not (tmp_path / "x.html").exists()


def _patch_manifest(run, **changes):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(changes)
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_missing_directory_and_file(tmp_path):
    with pytest.raises(KernelscopeError, match="does not exist"):
        inspect_run(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(KernelscopeError, match="is a file, not a directory"):
        inspect_run(tmp_path / "f.txt")


def test_unknown_analysis_is_suggested(fake_run, tmp_path):
    with pytest.raises(KernelscopeError, match=r"analyses \(--only\): unknown section 'kernel'; did you mean 'kernels'"):
        build_report(fake_run, tmp_path / "x.html", analyses="training,kernel", progress=False)


def test_out_path_that_is_a_directory(fake_run, tmp_path):
    with pytest.raises(KernelscopeError, match="is a directory; give the path of an .html file"):
        build_report(fake_run, tmp_path, analyses=["training"], progress=False)


def test_model_sections_explain_why_they_are_missing(fake_run, tmp_path):
    """Without checkpoints, model-based sections say so instead of crashing (or hiding it)."""
    result = build_report(fake_run, tmp_path / "x.html", analyses=["patches", "receptive"], progress=False)
    for name in ("patches", "receptive"):
        assert result.status[name] == "unavailable"
        assert result.missing()[name]


def test_analyses_are_listed_in_order():
    assert ANALYSES[0] == "operation" and "atlas" in ANALYSES and "shift" in ANALYSES


def test_colour_first_layer_is_drawn_as_rgb(tmp_path, rng):
    run = write_fake_run(tmp_path / "rgb")
    for path in (run / "kernels").glob("*.npz"):
        arrays = dict(np.load(path))
        arrays["conv1"] = rng.normal(size=(8, 3, 5, 5)).astype(np.float32)
        np.savez(path, **arrays)
    probe = dict(np.load(run / "probe.npz"))
    np.savez(run / "probe.npz", images=np.repeat(probe["images"], 3, 1), raw=np.repeat(probe["raw"], 3, 1),
             labels=probe["labels"])
    result = build_report(run, tmp_path / "r.html", analyses=["kernels", "featuremaps"], strict=True,
                          progress=False)
    assert result.status == {"run": "ok", "kernels": "ok", "featuremaps": "ok"}
    assert "3 input channels, drawn as RGB with zero at mid-grey" in (tmp_path / "r.html").read_text()


def _failing_section(error: BaseException):
    def build():
        raise error
    return build


def test_guarded_reraises_an_import_error_of_kernelscope_itself():
    from kernelscope.report.build import guarded

    for strict in (False, True):
        with pytest.raises(ModuleNotFoundError, match="kernelscope.no_such_module"):
            guarded("x", "X", _failing_section(ModuleNotFoundError(
                "No module named 'kernelscope.no_such_module'", name="kernelscope.no_such_module")), strict=strict)
        with pytest.raises(ImportError, match="cannot import name 'gone'"):
            guarded("x", "X", _failing_section(ImportError(
                "cannot import name 'gone' from 'kernelscope.ops'", name="kernelscope.ops")), strict=strict)


def test_guarded_names_a_missing_optional_package_in_one_line():
    from kernelscope.report.build import guarded

    missing = ModuleNotFoundError("No module named 'onnx'", name="onnx.helper")
    section = guarded("x", "X", _failing_section(missing))
    assert (section.status, section.reason) == (
        "unavailable", "needs the package 'onnx', which is not installed (No module named 'onnx')")
    with pytest.raises(ModuleNotFoundError):
        guarded("x", "X", _failing_section(missing), strict=True)


def test_operation_section_has_the_probe_and_the_backward_walk_through():
    from kernelscope.report.build import operation_section

    section = operation_section()
    page = "".join(section.body)
    assert "Which installed library computes which" in page
    assert "Learning the kernel: the backward pass" in page
