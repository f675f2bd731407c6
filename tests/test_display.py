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
