"""The visualisation report section: renders beside patches and projections, init-control flags, escaping."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kernelscope.analysis.projection import project_top_patches
from kernelscope.analysis.visualize import feature_visualization
from kernelscope.report.visualize import visualization_section


def test_section_shows_table_figure_and_flags(rng):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU()).eval()
    init = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU()).eval()
    data = rng.random((10, 1, 10, 10)).astype(np.float32)
    result = feature_visualization(net, "0", data, steps=3, init_model=init, random_directions=1, k=2)
    projections = {m: project_top_patches(net, "0", data, result.top, method=m) for m in ("guided", "deconvnet")}
    html = str(visualization_section(result, projections=projections, prefix="x-").to_html())
    assert 'id="x-visualize"' in html and "data:image/png;base64," in html
    assert "init ratio" in html and "random unit directions" in html
    flagged = int((~result.beats_init).sum())
    assert ("not a finding" in html) == (flagged > 0)


def test_report_of_a_run_without_checkpoints_says_why(fake_run, tmp_path):
    from kernelscope.report.build import ANALYSES, build_report

    assert "visualize" in ANALYSES
    result = build_report(fake_run, tmp_path / "r.html", analyses=["visualize"], progress=False)
    assert result.status["visualize"] == "unavailable"
    assert "checkpoint" in result.missing()["visualize"]

