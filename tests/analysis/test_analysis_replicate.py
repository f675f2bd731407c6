"""Replication over seeds: the summary's arithmetic and one tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kernelscope.analysis.replicate import bootstrap_interval, replicate, summarise
from kernelscope.errors import KernelscopeError


def test_bootstrap_interval_of_the_mean_covers_it_and_shrinks_with_more_seeds(rng):
    few = rng.normal(0.5, 0.1, 5)
    many = rng.normal(0.5, 0.1, 50)
    lo_few, hi_few = bootstrap_interval(few)
    lo_many, hi_many = bootstrap_interval(many)
    assert lo_few < few.mean() < hi_few and lo_many < many.mean() < hi_many
    assert hi_many - lo_many < hi_few - lo_few
    # against the normal approximation: half-width ~1.96 sd / sqrt(n)
    assert (hi_many - lo_many) / 2 == pytest.approx(1.96 * many.std() / np.sqrt(50), rel=0.2)
    assert bootstrap_interval(np.array([0.3, 0.3, 0.3])) == (pytest.approx(0.3), pytest.approx(0.3))


def test_summarise_skips_missing_values_and_non_numbers():
    rows = [{"a": 1.0, "b": None, "name": "x"}, {"a": 3.0, "b": 2.0, "flag": True}]
    s = summarise(rows)
    assert set(s) == {"a", "b"}
    assert s["a"]["mean"] == 2.0 and s["a"]["min"] == 1.0 and s["a"]["max"] == 3.0 and s["a"]["n"] == 2
    assert s["b"]["n"] == 1 and s["b"]["values"] == [None, 2.0]


def test_a_tiny_replication_trains_each_seed_and_reuses_finished_runs(tmp_path):
    kwargs = {"epochs": 1, "train_limit": 128, "n_null": 50, "surrogates": 39}
    result = replicate("structure", 2, tmp_path, **kwargs)
    assert result["seeds"] == [0, 1] and len(result["per_seed"]) == 2
    for key in ("accuracy", "classical", "structured_beyond_spectrum", "structured_beyond_spectrum_control_smooth",
                "classical_control_random"):
        assert result["summary"][key]["n"] == 2, key
    # different seeds, different networks
    assert not np.allclose(np.load(tmp_path / "seed_0" / "kernels" / "epoch_001.npz")["features.0"],
                           np.load(tmp_path / "seed_1" / "kernels" / "epoch_001.npz")["features.0"])
    saved = json.loads((tmp_path / "replicate.json").read_text())
    assert saved["summary"]["accuracy"]["mean"] == pytest.approx(result["summary"]["accuracy"]["mean"])
    assert "| accuracy |" in (tmp_path / "replicate.md").read_text()
    stamp = (tmp_path / "seed_0" / "manifest.json").stat().st_mtime_ns
    again = replicate("structure", [0], tmp_path, **kwargs)
    assert (tmp_path / "seed_0" / "manifest.json").stat().st_mtime_ns == stamp  # reused, not retrained
    assert again["per_seed"][0]["accuracy"] == result["per_seed"][0]["accuracy"]
    with pytest.raises(KernelscopeError, match="each seed once"):
        replicate("structure", [1, 1], tmp_path, **kwargs)


def test_the_command_prints_the_table(cli_runner, tmp_path):
    out = tmp_path / "rep"
    res = cli_runner("replicate", "--preset", "structure", "--seeds", "1", "--epochs", "1",
                     "--train-limit", "64", "--n-null", "30", "--surrogates", "19", "--out", out)
    assert res.exit_code == 0, res.output
    assert "| structured_beyond_spectrum |" in res.output and (out / "replicate.json").exists()
    bad = cli_runner("replicate", "--preset", "structur", "--seeds", "1", "--out", out)
    assert bad.exit_code == 2 and "Error:" in bad.output and "structure" in bad.output


def test_the_faces_recipe_replicates_detectors_shift_and_occlusion_drops_with_intervals(tmp_path):
    """End to end on the faces preset (1 epoch on 64 images, two seeds, quick analyses: ~35 s on 2 cores)."""
    result = replicate("faces", 2, tmp_path, epochs=1, train_limit=64, n_null=30, surrogates=19, quick=True)
    summary = result["summary"]
    keys = ["accuracy", "structured_beyond_spectrum", "shift_auroc", "shift_auroc_init", "shift_quiet"]
    for part in ("eyes", "mouth"):
        keys += [f"detectors_{part}", f"detectors_{part}_gated", f"detectors_{part}_init_gated"]
        for init in ("", "_init"):
            keys += [f"occlusion_{part}_{what}{init}" for what in ("detectors", "drop", "control_drop", "selectivity")]
            keys.append(f"occlusion_{part}_detectors{init}_gated")
    for key in keys:
        s = summary[key]
        assert s["n"] == 2, key  # measured on both seeds
        low, high = s["ci95"]
        assert low <= s["mean"] + 1e-12 and s["mean"] <= high + 1e-12 and s["min"] <= low and high <= s["max"], key
    for row in result["per_seed"]:
        assert 0 <= row["shift_auroc"] <= 1 and 0 <= row["shift_auroc_init"] <= 1
        for part in ("eyes", "mouth"):
            for init in ("", "_init"):
                o = f"occlusion_{part}"
                # a gated detector is a detector whose drop also clears the controls' interval
                assert row[f"{o}_detectors{init}_gated"] <= row[f"{o}_detectors{init}"]
                assert row[f"{o}_drop{init}"] <= 1.0  # maxima are clamped at 0: no drop beyond 100%
                assert row[f"{o}_selectivity{init}"] == pytest.approx(row[f"{o}_drop{init}"]
                                                                     - row[f"{o}_control_drop{init}"])
            assert row[f"detectors_{part}_gated"] <= row[f"detectors_{part}"]
    assert "| occlusion_eyes_drop |" in (tmp_path / "replicate.md").read_text()
    assert repr(result).startswith("<Replication: faces over 2 seeds [0, 1]; accuracy ")


def test_best_over_layers_counts_gated_occlusion_detectors(rng):
    """Hand-made maxima: one channel loses 80% with the part covered and nothing with the controls."""
    from kernelscope.analysis.part_contrast import best_over_layers
    from kernelscope.analysis.parts import PartSelectivity

    n, k = 40, 4
    intact = rng.uniform(1.0, 2.0, size=(n, 2))  # (N, C)
    occluded = intact.copy()
    occluded[:, 0] *= 0.2  # channel 0: an eye detector
    controls = np.repeat(intact[:, None], k, axis=1) * rng.uniform(0.97, 1.03, size=(n, k, 2))  # (N, K, C)
    settings = {"n_boot": 200, "seed": 0, "margin": 0.15}
    detector = PartSelectivity("a", ["eyes"], intact, {"eyes": occluded}, {"eyes": controls}, settings=settings)
    quiet = PartSelectivity("b", ["eyes"], intact, {"eyes": intact.copy()}, {"eyes": controls}, settings=settings)
    best = best_over_layers({"a": detector, "b": quiet}, "eyes")
    assert (best["layer"], best["channel"]) == ("a", 0) and best["detector"] and best["detector_gated"]
    assert best["part_drop"] == pytest.approx(0.8) and abs(best["control_drop"]) < 0.03
    assert best["n_detectors"] == {"a": 1, "b": 0} and best["n_detectors_gated"] == {"a": 1, "b": 0}
