"""An HTML page of plotly figures. plotly.js (about 4.6 MB) is inlined by default, so a page opens
offline; `plotlyjs="cdn"` loads it from plotly's CDN instead and `"directory"` from a shared
`plotly.min.js` beside the page, so a folder of several reports holds one copy.

The page is pure ASCII (non-ASCII characters in plotly.js become JavaScript escapes, elsewhere
HTML character references), so it can be written under any locale. The page is a list of
sections; a section has a heading, optional HTML (tables, notes) and figures. Figures are drawn by one script at the end; when every `Plotly.newPlot` has resolved it
sets `data-figures-rendered="N"` on <body> (or `data-render-error`), which is what the headless
browser test looks for.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from rllmsim.errors import ConfigError
from rllmsim.report.files import write_text_atomic

TEMPLATE = "plotly_white"

_CSS = """
body { font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1280px; padding: 0 16px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.subtitle { color: #666; margin-top: 0; }
.note { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 10px; font-size: 12px; overflow-x: auto; }
table.data { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.data th { background: #f3f3f3; }
table.data td.text, table.data th.text { text-align: left; }
.figure { width: 100%; min-height: 380px; }
"""


@dataclass
class Section:
    title: str
    figures: list[go.Figure] = field(default_factory=list)
    html: str = ""


def table_html(header: Sequence[str], rows: Iterable[Sequence[object]], text_columns: Iterable[int] = (0,)) -> str:
    text = set(text_columns)

    def cell(tag: str, i: int, value: object) -> str:
        cls = ' class="text"' if i in text else ""
        return f"<{tag}{cls}>{html.escape(_fmt(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        # latencies in ms reach tens of thousands: digits, not 4.399e+04
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return "" if value is None else str(value)


def _js_ascii(source: str) -> str:
    """JavaScript source with every non-ASCII character as a \\uXXXX escape (valid in strings,
    regular expressions and identifiers alike; astral characters as surrogate pairs)."""
    def escape(ch: str) -> str:
        code = ord(ch)
        if code <= 0xFFFF:
            return f"\\u{code:04x}"
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return "".join(escape(ch) if ord(ch) > 127 else ch for ch in source) if not source.isascii() else source


_PLOTLYJS: list[str] = []
#: How a page gets plotly.js: inlined, from plotly's CDN, or from plotly.min.js in its folder.
PLOTLYJS_MODES = ("inline", "cdn", "directory")
PLOTLYJS_FILE = "plotly.min.js"


def plotlyjs_ascii() -> str:
    if not _PLOTLYJS:
        from plotly.offline import get_plotlyjs
        _PLOTLYJS.append(_js_ascii(get_plotlyjs()))
    return _PLOTLYJS[0]


def check_plotlyjs(mode: str) -> str:
    if mode not in PLOTLYJS_MODES:
        raise ConfigError(f"--plotlyjs {mode!r}: give one of {', '.join(PLOTLYJS_MODES)} (inline works offline)")
    return mode


def plotlyjs_tag(mode: str) -> str:
    """The <script> that loads plotly.js in `mode`."""
    if check_plotlyjs(mode) == "inline":
        return f'<script type="text/javascript">{plotlyjs_ascii()}</script>'
    from plotly.offline import get_plotlyjs_version

    src = f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js" if mode == "cdn" else PLOTLYJS_FILE
    return f'<script type="text/javascript" charset="utf-8" src="{src}"></script>'


def write_plotlyjs(folder: Path) -> Path:
    """plotly.min.js into `folder` for pages written with `plotlyjs="directory"`; kept if there
    already (every page of one rllmsim version loads the same file)."""
    from plotly.offline import get_plotlyjs

    path = folder / PLOTLYJS_FILE
    return path if path.exists() else write_text_atomic(path, get_plotlyjs())


def render_page(title: str, subtitle: str, sections: Sequence[Section], plotlyjs: str = "inline") -> str:
    """The whole page, plotly.js loaded as `plotlyjs` says (one of PLOTLYJS_MODES)."""
    figures, body = [], []
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.html:
            body.append(section.html)
        for fig in section.figures:
            fig_id = f"fig{len(figures)}"
            fig.update_layout(template=TEMPLATE)
            spec = json.loads(pio.to_json(fig, validate=False))
            figures.append({"id": fig_id, "data": spec.get("data", []), "layout": spec.get("layout", {})})
            height = int(spec.get("layout", {}).get("height") or 420)
            body.append(f'<div id="{fig_id}" class="figure" style="height:{height}px"></div>')
    # every "<" as a JSON escape: no run-file text can open a tag in the page (plotly sanitizes what it draws)
    payload = json.dumps(figures, separators=(",", ":"), ensure_ascii=True).replace("<", "\\u003c")
    script = (
        "const FIGURES = " + payload + ";\n"
        "Promise.all(FIGURES.map(f => Plotly.newPlot(f.id, f.data, f.layout, "
        "{responsive: true, displaylogo: false})))\n"
        "  .then(() => document.body.setAttribute('data-figures-rendered', String(FIGURES.length)))\n"
        "  .catch(e => document.body.setAttribute('data-render-error', String(e)));\n"
    )
    head_and_body = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
        "PLOTLYJS\n</head>\n"
        f"<body data-figures=\"{len(figures)}\">\n<h1>{html.escape(title)}</h1>\n"
        f"<p class=\"subtitle\">{html.escape(subtitle)}</p>\n" + "\n".join(body)
    ).encode("ascii", "xmlcharrefreplace").decode("ascii")
    return (head_and_body.replace("PLOTLYJS", plotlyjs_tag(plotlyjs), 1) +
            f"\n<script type=\"text/javascript\">\n{script}</script>\n</body>\n</html>\n")
