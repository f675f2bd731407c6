"""The quick demo end to end: real training on the bundled data, every analysis, the story report.

The parts contrast (four face networks, ~1.5 min even in quick mode) is left out of this run and
tested on its own result shape below; everything else runs for real, and each expected section
must be present and shown (not "unavailable").
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from test_report_browser import open_in_browser

from kernelscope.demo import run_demo
from kernelscope.errors import KernelscopeError
from kernelscope.report.sections import parts_contrast_section

STAGES = ("mnist", "atlas", "visualize", "correlation", "faces", "dissect", "shift", "report")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    result = run_demo(out, quick=True, strict=True, progress=False, stages=STAGES, log=lines.append)
    return result, lines


def test_quick_demo_runs_every_stage(quick_demo):
    result, lines = quick_demo
    assert {name: s.status for name, s in result.stages.items()} == {name: "ok" for name in STAGES}
    for name in ("atlas.json", "visualize.json", "dissect.json", "shift.json", "summary.txt", "report.html"):
        assert (result.out_dir / name).is_file(), name
    assert (result.out_dir / "runs" / "mnist" / "manifest.json").is_file()
    figures = list((result.out_dir / "figures").glob("*.png"))
    assert len(figures) == result.report_path.read_text().count("<img ")
    assert any(line.startswith("[demo] report: ok") for line in lines)


def test_quick_demo_summary_numbers(quick_demo):
    result, _ = quick_demo
    n = result.numbers
    assert 0.0 <= n["mnist_test_acc"] <= 1.0 and n["mnist_test_acc"] > 0.2  # 10 classes: chance is 0.1
    assert 0.0 <= n["atlas_fraction"] <= 1.0 and n["atlas_n"] == 16
    assert n["atlas_init_fraction"] <= 0.1  # random small-init kernels are not classical filters
    for concept in ("eyes", "mouth"):
        d = n[f"dissect_{concept}"]
        assert 0.0 <= d["chance"] <= 1.0 and 0.0 <= d["iou"] <= 1.0
    assert 0.0 <= n["shift"]["network_auroc"] <= 1.0
    c = n["correlation"]
    assert [r["layer"] for r in c["per_layer"]] == ["features.0", "features.3"] and c["at"] == "activation"
    assert all(0.0 <= r["init_median_r2"] <= 1.0 for r in c["per_layer"]) and -1.0 <= c["rho_ncc"] <= 1.0
    assert "does a channel measure correlation? median held-out R^2" in result.summary()
    strict = n["strict"]  # issue 19: the stricter headline, each beside its control
    assert 0.0 <= strict["structured_beyond_spectrum"] <= 1.0 and "structured_beyond_spectrum_control_smooth" in strict
    assert strict["detectors_eyes_gated"] <= strict["detectors_eyes"]
    assert "MNIST first layer, structured beyond its spectrum: " in result.summary()
    assert "faces net, eyes detectors: " in result.summary() and "(one seed; " in result.summary()
    assert (result.out_dir / "correlation.json").is_file()
    v = n["visualize"]  # issue 15: renders of the last conv layer beside the init control
    assert v["layer"] == "features.3" and v["read"].startswith("features.4") and v["units"] == 4
    assert v["median_init_ratio"] is not None and 0 <= v["beat_init"] <= v["live"] <= v["units"]
    saved = json.loads((result.out_dir / "visualize.json").read_text())
    assert saved["summary"] == {k: v[k] for k in saved["summary"]}
    assert saved["ratio_definition"].startswith("ratio = activation the render reaches / the data-set maximum, both "
                                                "read at features.4")
    assert [u["channel"] for u in saved["units"]] == [0, 1, 2, 3]
    assert all(u["init_ratio"] is not None or u["init_data_max"] == 0 for u in saved["units"])
    assert "what the MNIST net's last conv layer wants to see (features.4" in result.summary()
    assert "(init control " in result.summary()
    atlas = json.loads((result.out_dir / "atlas.json").read_text())
    assert atlas["fractions"]["edge-like"] + atlas["fractions"]["gabor-like"] == pytest.approx(n["atlas_fraction"])
    text = result.summary()
    assert "first-layer kernels edge-/Gabor-like:" in text and "(at initialisation:" in text
    assert "strongest eyes detector" in text and "faces in, objects out" in text
    assert "objects out (held-out non-faces, the net's own negative class; layer " in text
    assert text.splitlines()[-1] == f"report: {result.report_path}"
    assert (result.out_dir / "summary.txt").read_text().strip() == text.strip()


def test_quick_demo_report_has_every_section(quick_demo):
    result, _ = quick_demo
    page = result.report_path.read_text()
    expected = ["operation", "mnist", "mnist-run", "mnist-training", "mnist-kernels", "mnist-atlas",
                "mnist-featuremaps", "mnist-visualize", "faces", "faces-run", "faces-training", "faces-kernels", "faces-featuremaps",
                "faces-patches", "faces-receptive", "faces-dissect", "faces-shift", "correlation", "stages"]
    for section_id in expected:
        match = re.search(rf'<section id="{section_id}" class="(\w+)">', page)
        assert match, f"section {section_id} missing"
        assert match.group(1) in ("ok", "partial"), f"section {section_id} is {match.group(1)}"
    assert page.count("<img ") >= 20
    assert "<script" not in page.lower()
    assert "How computed" in page and "Control:" in page
    assert "They are the network&#x27;s own negative class, not a novel domain." in page  # the shift's objects
    assert "ratio = activation the render reaches / the data-set maximum" in page  # the visualisation section


def test_quick_demo_report_in_a_browser(quick_demo, tmp_path):
    result, _ = quick_demo
    info = open_in_browser(result.report_path, screenshot=tmp_path / "demo.png")
    assert info["console_errors"] == [] and info["page_errors"] == [] and info["failed"] == []
    assert all(url.startswith(("file:", "data:")) for url in info["requests"])
    assert info["images"] and all(i["width"] > 0 and i["height"] > 0 for i in info["images"])


def _contrast(onet_drop: float, easy_drop: float) -> dict:
    """A result with the shape of kernelscope.analysis.parts.part_contrast (its own tests cover the numbers)."""
    def model(layer, channel, part, control, detector):
        return {"layer": layer, "channel": channel, "part_drop": part, "control_drop": control,
                "selectivity": part - control, "ci": [part - control - 0.05, part - control + 0.05],
                "detector": detector, "n_detectors": {layer: int(detector)},
                "output": {"intact": 0.99, "occluded": 0.9, "control": 0.98}}
    return {"part": "eyes", "models": {"onet": model("conv3", 7, onet_drop, 0.14, True),
                                       "easy": {**model("6", 2, easy_drop, 0.03, False), "test_accuracy": 0.99}},
            "settings": {"n_controls": 8, "fill": "zero", "margin": 0.15, "n_boot": 300,
                         "images": {"onet": 100, "small": 40}}, "seconds": 1.0}


def test_parts_contrast_section_shows_each_network():
    section = parts_contrast_section(_contrast(0.51, 0.06))
    html = section.to_html()
    assert section.status == "ok"
    assert "MTCNN ONet (pretrained, 48x48 RGB)" in html and "conv3:7" in html
    assert '<td class="num">0.51</td>' in html and '<td class="num">0.06</td>' in html
    assert "equal-area occlusions elsewhere" in html
    assert "<img " in html


def test_demo_rejects_unknown_stage_and_file_out(tmp_path):
    with pytest.raises(KernelscopeError, match=r"stages: unknown demo stage 'atlass'; did you mean 'atlas'"):
        run_demo(tmp_path, stages=("atlass",))
    (tmp_path / "f").write_text("x")
    with pytest.raises(KernelscopeError, match="is a file; give a folder"):
        run_demo(tmp_path / "f")


def test_demo_command_on_a_file(tmp_path, cli_runner):
    (tmp_path / "f").write_text("x")
    result = cli_runner("demo", "--out", tmp_path / "f")
    assert result.exit_code == 2
    assert result.output.endswith(f"Error: Invalid value for '--out': Directory '{tmp_path / 'f'}' is a file.\n")


def test_stage_without_its_input_is_unavailable(tmp_path):
    result = run_demo(tmp_path, stages=("atlas", "dissect"), progress=False, log=lambda line: None)
    assert result.stages["atlas"].status == "unavailable"
    assert result.stages["atlas"].reason == "needs the MNIST run (stage 'mnist')"
    assert result.stages["dissect"].reason == "needs the faces run (stage 'faces')"
    assert result.report_path is None
    assert np.isfinite(result.seconds)


def test_an_import_error_of_kernelscope_fails_the_stage_loudly(tmp_path, monkeypatch):
    """A broken import of the project's own modules is a bug: 'failed' (and raised when strict), never 'unavailable'."""
    import kernelscope.analysis.part_contrast as part_contrast

    def broken(**kwargs):
        raise ImportError("No module named 'kernelscope.analysis.gone'", name="kernelscope.analysis.gone")

    monkeypatch.setattr(part_contrast, "part_contrast", broken)
    result = run_demo(tmp_path, stages=("parts",), progress=False, log=lambda line: None)
    assert result.stages["parts"].status == "failed"
    assert "kernelscope.analysis.gone" in result.stages["parts"].reason
    with pytest.raises(ImportError, match="kernelscope.analysis.gone"):
        run_demo(tmp_path, stages=("parts",), progress=False, strict=True, log=lambda line: None)


def test_report_of_the_real_mnist_run(quick_demo, tmp_path):
    """kernelscope report on a run that training wrote: model sections work, face-only ones say why not."""
    from kernelscope.report.build import build_report

    result, _ = quick_demo
    report = build_report(result.out_dir / "runs" / "mnist", tmp_path / "r.html", strict=True, progress=False,
                          analyses=["patches", "receptive", "dissect", "shift", "parts"])
    assert report.status == {"run": "ok", "patches": "ok", "receptive": "ok", "dissect": "unavailable",
                             "shift": "unavailable", "parts": "unavailable"}
    assert report.missing()["dissect"] == ("dissection needs concept masks; this run's dataset is 'mnist' (the "
                                           "bundled 'faces' have eye and mouth masks; run `kernelscope dissect` "
                                           "with your own masks)")
    assert report.missing()["shift"].startswith("the bundled shift report is faces in, objects out")
    assert report.missing()["parts"].startswith("part detectors need part landmarks or masks")


def test_facenet_stage_measures_a_real_network_with_its_controls(tmp_path):
    """dlib's face ResNet on real photos: atlas, occlusion and shift, each with the network at initialisation."""
    result = run_demo(tmp_path, quick=True, strict=True, progress=False, stages=("facenet", "report"),
                      log=lambda line: None)
    assert {name: s.status for name, s in result.stages.items()} == {"facenet": "ok", "report": "ok"}
    f = result.numbers["facenet"]
    assert f["atlas"]["layer"] == "conv1" and f["atlas"]["n"] == 32
    assert {"init", "random", "smooth", "spectral", "shuffled"} <= set(f["atlas"]["controls"])
    assert sum(f["colour"]["fractions"].values()) == pytest.approx(1.0)
    for part in ("eyes", "mouth"):
        o = f[f"occlusion_{part}"]
        assert o["init_detectors"] is not None and o["init_selectivity"] is not None
        assert o["layer"] in ("layer2.3.conv2", "layer3.2.conv2", "layer4.2.conv2")
    for name in ("animal faces", "objects"):
        s = f["shift"][name]
        assert s["channels"] == 256 and s["init_quiet"] is not None and s["read"].startswith("layer5.0.relu2")
    saved = json.loads((tmp_path / "facenet.json").read_text())
    assert saved["atlas"] == f["atlas"] and "mandrill" in saved["images"]["animal faces"]
    text = result.summary()
    assert "dlib-face-resnet (pretrained), first layer (32 RGB kernels)" in text and "faces vs animal faces" in text
    page = result.report_path.read_text()
    assert re.search(r'<section id="facenet" class="(ok|partial)">', page)
