"""Building blocks of the self-contained HTML report.

Everything the report shows is built from a few pieces: a :func:`section`, a
:func:`figure` (a PNG embedded as a ``data:`` URI), a :func:`table`, a
:func:`how` line that says how a number was computed and against which control,
and :func:`note` for what is missing. :func:`document` wraps them in one page
whose Content-Security-Policy forbids every network request.

Escaping is not optional: every piece of text is escaped with :func:`html.escape`
unless it is already :class:`Html` (a fragment built by this module). A class
named ``<script>`` therefore shows as text and never runs.

Examples
--------
>>> str(table(["class", "count"], [["<script>", 3]]))
'<table><thead><tr><th>class</th><th>count</th></tr></thead><tbody><tr><td>&lt;script&gt;</td><td class="num">3</td></tr></tbody></table>'
"""

from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CSP",
    "Html",
    "Section",
    "escape",
    "join",
    "png_data_uri",
    "figure",
    "table",
    "how",
    "note",
    "paragraph",
    "pre",
    "section",
    "document",
    "format_number",
]

#: No network at all: images only from data: URIs, styles only inline, no scripts.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


class Html(str):
    """A string that is already safe HTML (built by this module); never escaped again."""

    __slots__ = ()


def escape(value: Any) -> Html:
    """Escape ``value`` for HTML text or attributes, unless it is already :class:`Html`.

    Examples
    --------
    >>> escape('<script>alert("x")</script>')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
    >>> escape(Html("<b>kept</b>"))
    '<b>kept</b>'
    """
    if isinstance(value, Html):
        return value
    return Html(_html.escape(str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "\n") -> Html:
    """Concatenate fragments, escaping the plain strings among them."""
    return Html(sep.join(escape(part) for part in parts))


def format_number(value: Any, digits: int = 3) -> str:
    """Format a number for a table: integers as is, floats with ``digits`` significant digits.

    Examples
    --------
    >>> format_number(0.123456), format_number(12), format_number(1234.5), format_number(float("nan"))
    ('0.123', '12', '1234', 'n/a')
    >>> format_number(None)  # how strict JSON stores NaN
    'n/a'
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if value != value:  # NaN
            return "n/a"
        if value == 0:
            return "0"
        if abs(value) >= 10 ** (digits + 3):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 10 ** digits:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes; refuses anything that is not a PNG.

    Examples
    --------
    >>> png_data_uri(b"not a png")
    Traceback (most recent call last):
    ...
    ValueError: png_data_uri expects PNG bytes (got 9 bytes starting with b'not a pn')
    """
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"png_data_uri expects PNG bytes (got {len(png)} bytes starting with {png[:8]!r})")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(fig_or_png: Any, *, alt: str, caption: Any = None, dpi: int = 100, width: int | None = None) -> Html:
    """An embedded figure: a matplotlib Figure (rendered to PNG) or PNG bytes, with alt text and caption."""
    if isinstance(fig_or_png, (bytes, bytearray)):
        png = bytes(fig_or_png)
    else:
        from kernelscope.report.figures.common import figure_png_bytes

        png = figure_png_bytes(fig_or_png, dpi=dpi)
    style = f' style="max-width:{int(width)}px"' if width else ""
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption is not None else ""
    return Html(f'<figure><img src="{png_data_uri(png)}" alt="{escape(alt)}"{style}>{cap}</figure>')


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, caption: Any = None,
          digits: int = 3) -> Html:
    """A table; numbers are formatted with :func:`format_number` and right-aligned, text is escaped."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, numbers.Number) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{escape(format_number(cell, digits))}</td>')
            elif isinstance(cell, bool):
                cells.append(f"<td>{escape(format_number(cell))}</td>")
            else:
                cells.append(f"<td>{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption is not None else ""
    return Html(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def how(text: Any, *, control: Any = None) -> Html:
    """One line saying how a number was computed, and the control it was compared to.

    Examples
    --------
    >>> str(how("best |cos| against 3,240 Gabor kernels", control="the same layer at initialisation"))
    '<p class="how"><b>How computed:</b> best |cos| against 3,240 Gabor kernels. <b>Control:</b> the same layer at initialisation.</p>'
    """
    line = f"<b>How computed:</b> {escape(str(text).rstrip('.'))}."
    if control is not None:
        line += f" <b>Control:</b> {escape(str(control).rstrip('.'))}."
    return Html(f'<p class="how">{line}</p>')


def note(text: Any, *, kind: str = "missing") -> Html:
    """A highlighted note: ``kind`` is "missing" (not available), "warning" or "info"."""
    if kind not in ("missing", "warning", "info"):
        raise ValueError(f"note kind must be 'missing', 'warning' or 'info' (got {kind!r})")
    return Html(f'<p class="note {kind}">{escape(text)}</p>')


def paragraph(text: Any) -> Html:
    """A paragraph of (escaped) text."""
    return Html(f"<p>{escape(text)}</p>")


def pre(text: Any) -> Html:
    """Preformatted (escaped) text, e.g. a terminal walk-through."""
    return Html(f"<pre>{escape(text)}</pre>")


@dataclass
class Section:
    """One section of the report.

    ``status`` is "ok" (shown), "partial" (shown, something missing) or "unavailable"
    (only the reason is shown). ``reason`` says what is missing, in one line.
    """

    id: str
    title: str
    body: list[Html] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    level: int = 2

    def to_html(self) -> Html:
        """The section as HTML (an anchor, a heading, the body or the reason it is missing)."""
        level = 2 if self.level not in (2, 3) else self.level
        parts = [f'<section id="{escape(self.id)}" class="{escape(self.status)}">',
                 f"<h{level}>{escape(self.title)}</h{level}>"]
        if self.reason:
            parts.append(note(self.reason, kind="missing" if self.status == "unavailable" else "warning"))
        parts.extend(escape(part) for part in self.body)
        parts.append("</section>")
        return Html("\n".join(parts))


def section(id: str, title: str, *body: Any, status: str = "ok", reason: str = "", level: int = 2) -> Section:
    """Build a :class:`Section` from fragments (plain strings become escaped paragraphs)."""
    parts = [part if isinstance(part, Html) else paragraph(part) for part in body]
    return Section(id=id, title=title, body=parts, status=status, reason=reason, level=level)


_STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:1.5em 2em 4em;background:#fff;box-shadow:0 0 8px rgba(0,0,0,.06)}
header h1{margin:.2em 0 .1em;font-size:1.8em}
header .meta{color:#57606a;font-size:.9em}
nav{background:#f0f3f6;border-radius:6px;padding:.6em 1em;margin:1em 0;font-size:.92em}
nav a{margin-right:1em;white-space:nowrap;text-decoration:none;color:#0b57d0}
nav a.unavailable{color:#8c959f;text-decoration:line-through}
section{border-top:1px solid #d0d7de;margin-top:1.6em;padding-top:.4em}
section.unavailable h2,section.unavailable h3{color:#6e7781}
h2{font-size:1.35em;margin:.4em 0}h3{font-size:1.1em;margin:.8em 0 .3em}
figure{margin:.8em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #e5e8eb;image-rendering:auto}
figcaption{font-size:.88em;color:#57606a;max-width:760px}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:.2em .6em;text-align:left}
th{background:#f0f3f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;color:#57606a;font-size:.9em;padding-bottom:.2em}
p.how{font-size:.88em;color:#3d4650;background:#f6f8fa;border-left:3px solid #8250df;padding:.3em .7em}
p.note{padding:.4em .8em;border-radius:4px}
p.note.missing{background:#fff8c5;border:1px solid #d4a72c}
p.note.warning{background:#ffebe9;border:1px solid #ff8182}
p.note.info{background:#ddf4ff;border:1px solid #54aeff}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.82em;line-height:1.35}
.numbers{display:flex;flex-wrap:wrap;gap:.8em;margin:.8em 0}
.numbers div{background:#f0f3f6;border-radius:6px;padding:.5em .9em;min-width:10em}
.numbers b{display:block;font-size:1.4em}
"""


def document(title: Any, sections: Sequence[Section], *, subtitle: Any = None,
             headline: Html | None = None, generated: str | None = None) -> Html:
    """A complete HTML page: CSP meta tag, inline style, contents, the sections.

    The page holds no script and loads nothing: every figure is a ``data:`` URI.
    """
    generated = generated or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    links = " ".join(
        f'<a href="#{escape(s.id)}" class="{escape(s.status)}">{escape(s.title)}</a>'
        for s in sections if s.level == 2
    )
    sub = f'<p class="meta">{escape(subtitle)}</p>' if subtitle is not None else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body><main>",
        f"<header><h1>{escape(title)}</h1>{sub}"
        f'<p class="meta">Generated by kernelscope on {escape(generated)}. '
        "Self-contained: every figure is embedded; this page makes no network request.</p></header>",
        f"<nav>{links}</nav>" if links else "",
        escape(headline) if headline is not None else "",
    ]
    parts.extend(s.to_html() for s in sections)
    parts.append("</main></body></html>")
    return Html("\n".join(p for p in parts if p))
