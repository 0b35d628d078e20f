"""Notebook figures that also read where no JavaScript runs: GitHub's notebook view, nbconvert's HTML.

A plotly figure in a notebook is a JSON payload that only a live frontend (JupyterLab, VS Code)
draws; GitHub and nbconvert show a blank space for it. `show(fig)` displays one output that
carries both the interactive figure and a PNG of it, so each viewer draws what it can: a live
notebook the interactive one, GitHub and nbconvert the image.

The PNG comes from plotly's static export, kaleido, which drives a Chrome or Chromium (CI
installs Chromium). The first figure is drawn by a browser started for it alone, which also shows
that one can start; then one kaleido server is kept for the session, since starting a browser
per figure costs seconds each time. Without kaleido or a browser the figure is still shown
interactively, with a one-line note saying why there is no image.
"""

from __future__ import annotations

import atexit
import base64
import warnings
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

WIDTH = 900  # px: as wide as GitHub's notebook column
PLOTLY = "application/vnd.plotly.v1+json"  # the interactive figure's MIME type
NO_IMAGE = ("no static image of this figure (plotly's static export needs kaleido and a Chrome or "
            "Chromium: pip install 'rllmsim[notebooks]'): {why}")

_server: dict[str, bool] = {"started": False}


def png(fig: go.Figure, width: int = WIDTH, height: int | None = None) -> bytes:
    """The figure as PNG bytes at `width` x `height` px (the figure's own height, else plotly's 450).
    Raises ImportError without kaleido and RuntimeError without a browser."""
    import kaleido

    with warnings.catch_warnings():  # plotly hands kaleido's server browser options it has no use for
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        image = pio.to_image(fig, format="png", width=width, height=height or fig.layout.height or 450, scale=1)
    if not _server["started"]:  # a browser starts here: keep one for the figures to come
        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _server["started"] = True
    return image


def bundle(fig: go.Figure, width: int = WIDTH) -> tuple[dict[str, Any], str | None]:
    """(the display bundle: plotly's interactive JSON, a PNG and a text line; why the PNG is
    missing, or None). The bundle has no text/html, which GitHub would pick and show blank."""
    data: dict[str, Any] = {PLOTLY: pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())[PLOTLY]}
    data["text/plain"] = f"<plotly figure: {fig.layout.title.text or 'untitled'}>"
    try:
        data["image/png"] = base64.b64encode(png(fig, width)).decode("ascii")
    except (ImportError, RuntimeError) as exc:
        return data, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return data, None


def show(fig: go.Figure, width: int = WIDTH) -> None:
    """Display `fig` interactively and as a PNG, in one output (see the module docstring)."""
    from IPython.display import display

    data, missing = bundle(fig, width)
    if missing:
        print(NO_IMAGE.format(why=missing))
    display(data, raw=True)
