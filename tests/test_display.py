"""Result objects show themselves: a short repr that says what they hold, Jupyter HTML with numbers and picture."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from kernelscope._display import Displayed, Picture, Summary, format_value, image_grid, png_bytes
from kernelscope.errors import KernelscopeError

HOSTILE = '<script>alert("x")</script>&'


class _Tags(HTMLParser):
    """Checks that every opened tag is closed in order (void tags aside) and collects text and img sources."""

    VOID = {"img", "br", "hr", "meta"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.text, self.images, self.tags = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")

    def handle_data(self, data):
        self.text.append(data)


def parse_html(markup: str) -> _Tags:
    """Parse HTML, failing on unbalanced tags or an unescaped <script>."""
    parser = _Tags()
    parser.feed(markup)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    assert "script" not in parser.tags, "text reached the HTML unescaped"
    return parser


def check_display(obj, *, numbers=(), picture: bool, max_repr: int = 400) -> _Tags:
    """The checks every result class passes (used by the classes' own tests too)."""
    text = repr(obj)
    assert text.startswith(f"<{type(obj).__name__}: ") and text.endswith(">"), text
    assert len(text) <= max_repr, f"repr is {len(text)} characters: {text}"
    assert "array(" not in text and "\n" not in text, text
    parsed = parse_html(obj._repr_html_())
    body = " ".join(parsed.text)
    for number in numbers:
        assert format_value(number) in body, f"{format_value(number)} not in the HTML of {type(obj).__name__}"
    assert bool(parsed.images) == picture
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
    return parsed


class Toy(Displayed):
    def __init__(self, layer="conv1", with_picture=True, n_rows=3):
        self.layer, self.with_picture, self.n_rows = layer, with_picture, n_rows

    def _display_summary(self):
        return Summary(f"toy of layer {self.layer}: 4 kernels", [("edge fraction", 0.8766), ("count", 7)],
                       table=[{"unit": i, "iou": 0.1 * i} for i in range(self.n_rows)], notes=[f"note {self.layer}"])

    def _display_picture(self):
        if not self.with_picture:
            return None
        return Picture(np.random.default_rng(0).normal(size=(4, 5, 5)), caption=f"kernels of {self.layer}")


def test_repr_says_what_it_holds_and_is_short():
    assert repr(Toy()) == "<Toy: toy of layer conv1: 4 kernels; edge fraction 0.877, count 7; table of 3 rows>"


def test_html_has_numbers_table_and_picture():
    parsed = check_display(Toy(), numbers=[0.8766, 7, 0.2], picture=True)
    assert "note conv1" in " ".join(parsed.text)
    parse_html(Toy(with_picture=False)._repr_html_())
    check_display(Toy(with_picture=False), picture=False)


def test_html_escapes_a_hostile_layer_name():
    markup = Toy(layer=HOSTILE)._repr_html_()
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    check_display(Toy(layer=HOSTILE), picture=True, max_repr=500)


def test_a_repr_never_raises():
    class Broken(Toy):
        def _display_summary(self):
            raise KeyError("summary")

    assert repr(Broken()) == "<Broken (its summary failed: KeyError: 'summary')>"
    with pytest.raises(KeyError):  # the HTML does raise: Jupyter shows the error and falls back to the repr
        Broken()._repr_html_()


def test_long_tables_are_cut():
    markup = Toy(n_rows=500)._repr_html_()
    assert markup.count("<tr>") < 60 and "460 more rows" in markup


def test_the_check_can_fail():
    class Leaky(Toy):
        def _display_summary(self):
            return Summary(f"layer {self.layer}", [("weights", str(np.zeros((40, 40))))])

    with pytest.raises(AssertionError):
        check_display(Leaky(), picture=True)
    with pytest.raises(AssertionError):
        parse_html("<div><script>alert(1)</script></div>")
    with pytest.raises(AssertionError):
        check_display(Toy(), numbers=[0.123], picture=True)


def test_png_decodes_to_the_grid():
    from PIL import Image

    kernels = np.stack([np.eye(3), -np.eye(3), np.zeros((3, 3))])
    grid, shown = image_grid(kernels, min_tile=3, columns=3)
    assert shown == 3 and grid.shape == (5, 13)  # one tile row, 1-pixel gaps
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(grid))))
    np.testing.assert_array_equal(decoded, grid)
    # signed: +1 white, -1 black, 0 mid-grey
    assert grid[1, 1] == 255 and grid[1, 5] == 0 and grid[1, 9] == 128
    rgb, _ = image_grid(np.random.default_rng(1).random((2, 4, 4, 3)), signed=False)
    assert np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))).shape == rgb.shape


def test_bad_picture_shapes_say_what_was_wrong():
    with pytest.raises(KernelscopeError, match=r"got shape \(5, 5\)"):
        image_grid(np.zeros((5, 5)))
    with pytest.raises(KernelscopeError, match="a PNG image"):
        png_bytes(np.zeros((2, 2, 2)))


def test_format_value_never_dumps_an_array():
    assert format_value(np.zeros((100, 100))) == "array of shape (100, 100)"
    assert format_value(list(range(50))) == "50 values"
    assert re.fullmatch(r".{80}", format_value("x" * 500))


# --- every result class of the atlas, tuning, replication, seed matching, face network and conventions ---------------


@pytest.fixture(scope="module")
def grey_atlas():
    from kernelscope.analysis.atlas import atlas

    edge = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])
    kernels = np.random.default_rng(0).normal(scale=0.2, size=(8, 1, 5, 5))
    kernels[:4, 0, 1:4, 1:4] += edge  # four edges among noise
    return atlas(kernels, n_null=100, surrogates=19, layer=HOSTILE, surrogate_control_layers=2)


def test_atlas_shows_its_headline_table_and_kernels(grey_atlas):
    a = grey_atlas
    head = a.headline()
    parsed = check_display(a, numbers=[head["structured_beyond_spectrum"], head["classical"],
                                       head["structured_beyond_spectrum_control_smooth"], a.fractions["edge-like"]],
                           picture=True, max_repr=450)
    text = repr(a)
    assert "8 kernels of 1x5x5" in text and "structured beyond spectrum" in text and "smooth random kernels" in text
    assert "edge-like" in " ".join(parsed.text)
    assert len(parsed.images) == 1


def test_atlas_of_rgb_kernels_shows_the_colour_census():
    from kernelscope.analysis.atlas import atlas

    a = atlas(np.random.default_rng(1).normal(size=(6, 3, 3, 3)), n_null=100, surrogates=0, layer="conv1")
    assert a.colour is not None
    parsed = check_display(a, numbers=[a.colour.fractions["luminance"]], picture=True)
    assert "colour: luminance" in " ".join(parsed.text)
    check_display(a.colour, numbers=[a.colour.fractions["colour-opponent"]], picture=False)
    assert repr(a.colour).startswith("<ColourCensus: colour census of 6 RGB kernels")


def test_surrogate_test_shows_count_and_control(grey_atlas):
    test = grey_atlas.surrogate["phase"]
    check_display(test, numbers=[test.fraction, test.control_fractions["smooth"]], picture=False)
    assert f"{test.count} of 8" in repr(test)


def test_evolution_shows_each_snapshot():
    from kernelscope.analysis.atlas import evolution

    edge = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])
    init = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    ev = evolution({0: init, 1: 0.5 * init + edge, 2: 0.01 * init + edge},
                   thresholds={"edge": 0.95, "centre-surround": 0.95, "blob": 0.95})
    parsed = check_display(ev, numbers=[ev.median_match[1]], picture=False)
    assert repr(ev).startswith("<Evolution: 2 kernels over 3 snapshots (epochs 0..2)")
    assert parsed.text.count("edge-like") == 1


def test_tuning_shows_channels_and_response_maps():
    import torch

    from kernelscope.analysis.tuning import tuning_curves

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.ReLU())
    t = tuning_curves(model, "0", (1, 15, 15), orientations=4, frequencies=[0.1, 0.2], phases=4)
    t.layer = HOSTILE
    check_display(t, numbers=[t.summary()["responsive"]], picture=True)
    assert "4 channels, 4 orientations x 2 frequencies x 4 phases" in repr(t)


def _replication():
    from kernelscope.analysis.replicate import Replication, summarise

    per_seed = [{"seed": s, "accuracy": 0.9 + 0.01 * s, "structured_beyond_spectrum": 0.5 + 0.1 * s,
                 "structured_beyond_spectrum_control_smooth": 0.1, "classical": 0.8} for s in range(3)]
    summary = summarise([{k: v for k, v in r.items() if k != "seed"} for r in per_seed])
    return Replication(preset=HOSTILE, seeds=[0, 1, 2], per_seed=per_seed, summary=summary,
                       interval="percentile bootstrap")


def test_replication_shows_mean_and_interval_per_number():
    r = _replication()
    low, high = r["summary"]["structured_beyond_spectrum"]["ci95"]
    check_display(r, numbers=[r["summary"]["accuracy"]["mean"]], picture=False, max_repr=500)
    text = repr(r)
    assert f"structured_beyond_spectrum 0.600 [{low:.3f}, {high:.3f}]" in text and "over 3 seeds" in text
    assert dict(r)["seeds"] == [0, 1, 2]  # still the dict it was


def test_seed_matching_shows_counts_and_matched_kernels():
    from kernelscope.analysis.matching_seeds import SeedMatching, match_pair

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 1, 5, 5))
    others = [ref[rng.permutation(6)] + 0.1 * rng.normal(size=ref.shape) for _ in range(2)]
    pairs = [match_pair(ref, k, n_permutations=20, rng=j) for j, k in enumerate(others)]
    m = SeedMatching(layer=HOSTILE, kind="kernels", sources=["a", "b", "c"], pairs=pairs,
                     in_every_seed=np.all([p.recurs for p in pairs], axis=0), kernels=[ref, *others])
    check_display(m, numbers=[np.median([p.null_p95 for p in pairs])], picture=True)
    assert "6 of 6" in repr(m)  # every noisy copy recurs
    check_display(pairs[0], numbers=[pairs[0].null_p95], picture=False)
    grid, shown = image_grid(m._display_picture().images)
    assert shown == 18


def test_face_network_result_shows_its_numbers(grey_atlas):
    from kernelscope.analysis.face_network import FaceNetworkResult

    result = FaceNetworkResult("dlib-face-resnet", grey_atlas, None, {}, {}, {})
    check_display(result, numbers=[grey_atlas.headline()["structured_beyond_spectrum"]], picture=True, max_repr=450)
    assert "face network dlib-face-resnet" in repr(result)


def test_conventions_show_one_row_per_call():
    from kernelscope.analysis.conventions import probe_conventions

    report = probe_conventions(["numpy", "kernelscope"])
    parsed = check_display(report, numbers=[2], picture=False)
    assert "numpy.convolve" in " ".join(parsed.text)
    assert repr(report).startswith("<ConventionsReport: 4 library calls") and "cross-correlation 2" in repr(report)
    check_display(report.results[0], picture=False)
