"""Atlas figures: they draw what the result holds and save atomically."""

from __future__ import annotations

import numpy as np

from kernelscope.analysis.atlas import atlas
from kernelscope.analysis.atlas.evolution import evolution
from kernelscope.analysis.atlas.templates import gabor_template
from kernelscope.report.figures.atlas import (
    evolution_figure,
    match_grid_figure,
    null_distributions_figure,
)
from kernelscope.report.figures.common import save_figure


def _kernels(rng, c=1):
    g = np.stack([gabor_template((7, 7), frequency=0.22, theta=t, phase=0.5, sigma_u=1.6, sigma_v=1.6)
                  for t in np.linspace(0, np.pi, 5, endpoint=False)])
    k = np.concatenate([g, rng.standard_normal((5, 7, 7))])
    return np.repeat(k[:, None], c, axis=1) * (rng.uniform(0.5, 1.5, (10, c, 1, 1)) if c > 1 else 1)


def test_match_grid_has_a_pair_of_panels_per_kernel(rng, tmp_path):
    result = atlas(_kernels(rng), n_null=100)
    fig = match_grid_figure(result, pairs_per_row=4)
    assert len(fig.axes) == 20
    titles = [ax.get_title(loc="left") for ax in fig.axes[::2]]
    assert titles[:5] == [f"#{i} gabor" for i in range(5)]
    # the right panel is the signed best template: its image equals result.best_templates
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), result.best_templates[0])
    path = save_figure(fig, tmp_path / "grid.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(match_grid_figure(result, max_kernels=3).axes) == 6


def test_rgb_grid_and_null_distributions(rng, tmp_path):
    result = atlas(_kernels(rng, c=3), n_null=100)
    grid = match_grid_figure(result)
    assert grid.axes[0].images[0].get_array().shape == (7, 7, 3)
    fig = null_distributions_figure(result)
    assert [ax.get_title() for ax in fig.axes] == ["edge match |cos|", "Gabor fit R$^2$",
                                                   "centre-surround match |cos|", "blob match |cos|"]
    # every threshold is drawn as a vertical line at its value
    for ax, score in zip(fig.axes, ("edge", "gabor", "centre-surround", "blob"), strict=True):
        assert any(np.allclose(line.get_xdata(), result.thresholds[score]) for line in ax.lines)
    save_figure(fig, tmp_path / "nulls.png")


def test_evolution_figure(rng, tmp_path):
    final = _kernels(rng)
    init = rng.standard_normal(final.shape)
    snaps = {e: (1 - a) * init + a * final for e, a in enumerate([0.0, 0.5, 0.9, 1.0])}
    result = atlas(final, n_null=100)
    ev = evolution(snaps, thresholds=result.thresholds)
    assert ev.fractions["gabor-like"][0] == 0.0 and ev.fractions["gabor-like"][-1] == 0.5
    fig = evolution_figure(ev)
    assert len(fig.axes) == 3
    save_figure(fig, tmp_path / "evolution.svg")
    assert (tmp_path / "evolution.svg").read_text().lstrip().startswith("<?xml")
