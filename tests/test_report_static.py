"""Notebook figures carry a PNG beside the interactive plotly JSON, or say in one line why not."""

from __future__ import annotations

import base64
import importlib
import sys

import plotly.graph_objects as go
import pytest

from rllmsim.report import static


def _figure() -> go.Figure:
    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[2, 0, 1]))
    fig.update_layout(title="probe", height=300)
    return fig


def test_without_kaleido_the_figure_stays_interactive_and_the_reason_is_one_line(monkeypatch, capsys):
    importlib.import_module("plotly.io._kaleido")  # plotly looks kaleido up once: before it is hidden

    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido -> ImportError
    data, missing = static.bundle(_figure())
    assert set(data) == {static.PLOTLY, "text/plain"} and "kaleido" in missing
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw: shown.append(data))
    static.show(_figure())
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "no static image" in printed and "kaleido" in printed
    assert shown and "image/png" not in shown[0]


def test_with_kaleido_the_bundle_has_a_png_of_the_figure_and_no_html():
    pytest.importorskip("kaleido", reason="pip install 'rllmsim[notebooks]'")
    data, missing = static.bundle(_figure())
    if missing and "Chrome" in missing:
        pytest.skip(f"no browser for kaleido: {missing}")
    assert missing is None and "text/html" not in data
    png = base64.b64decode(data["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == static.WIDTH and int.from_bytes(png[20:24], "big") == 300
    assert data[static.PLOTLY]["layout"]["title"]["text"] == "probe"
    assert static.png(_figure()) == static.png(_figure())  # the second one from the kept server
