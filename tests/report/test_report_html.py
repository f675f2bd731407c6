"""The HTML building blocks: escaping, embedding, the no-network policy."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from kernelscope.report import html as H
from kernelscope.report.figures.common import new_figure


def test_escape_hostile_text_everywhere():
    hostile = '<script>alert("x")</script>'
    fragments = [
        H.table([hostile], [[hostile]], caption=hostile),
        H.how(hostile, control=hostile),
        H.note(hostile),
        H.paragraph(hostile),
        H.pre(hostile),
        H.section("s", hostile, hostile).to_html(),
    ]
    for fragment in fragments:
        assert "<script" not in fragment
        assert "&lt;script&gt;" in fragment


def test_html_fragments_are_not_escaped_twice():
    inner = H.table(["a"], [[1]])
    assert H.escape(inner) == inner
    assert "&amp;lt;" not in H.join([inner, "<x>"])
    assert H.join([inner, "<x>"]).endswith("&lt;x&gt;")


def test_table_formats_numbers():
    out = H.table(["x"], [[0.123456], [7], [float("nan")], [True]])
    assert '<td class="num">0.123</td>' in out
    assert '<td class="num">7</td>' in out
    assert '<td class="num">n/a</td>' in out
    assert "<td>yes</td>" in out


def test_figure_embeds_a_decodable_png(rng):
    fig = new_figure(figsize=(2, 1))
    fig.add_subplot().imshow(rng.random((4, 4)))
    out = H.figure(fig, alt='a "quoted" <alt>', caption="cap & more")
    match = re.search(r'src="data:image/png;base64,([^"]+)"', out)
    assert match
    image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert image.size == (200, 100)
    assert 'alt="a &quot;quoted&quot; &lt;alt&gt;"' in out
    assert "cap &amp; more" in out


def test_png_data_uri_refuses_other_bytes():
    with pytest.raises(ValueError, match="expects PNG bytes"):
        H.png_data_uri(b"GIF89a")


def test_document_has_strict_csp_and_no_external_reference():
    page = H.document("t <b>", [H.section("one", "One", "text"), H.Section("two", "Two", status="unavailable",
                                                                        reason="not here")])
    assert '<meta http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;; img-src data:;' in page
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<title>t &lt;b&gt;</title>" in page
    assert '<a href="#two" class="unavailable">Two</a>' in page
    assert "not here" in page


def test_note_rejects_unknown_kind():
    with pytest.raises(ValueError, match="note kind"):
        H.note("x", kind="loud")


def test_format_number_scientific_for_huge_and_tiny():
    assert H.format_number(1.5e-7) == "1.5e-07"
    assert H.format_number(np.float32(2.5e7)) == "2.50e+07"
