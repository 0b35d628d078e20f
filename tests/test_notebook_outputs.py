"""The shipped notebooks carry their executed outputs, every figure also as a PNG, so they read on
GitHub and in nbconvert's HTML without being run (scripts/execute_notebooks.py writes them)."""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install 'rllmsim[notebooks]'")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"
SHOWS = re.compile(r"\bshow\(")  # rllmsim.report.static.show(fig), and a bare fig.show() too
MODE = "The saved outputs come from"
MAX_BYTES = 1 << 20


def _png_width(encoded: str) -> int:
    data = base64.b64decode(encoded)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">I", data[16:20])[0]


def test_every_notebook_is_found():
    assert {p.name for p in NOTEBOOKS} >= {"capacity_planning.ipynb", "reasoning_serving_study.ipynb",
                                            "traffic_growth_whatif.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shipped_notebook_is_executed_in_order_without_errors(path):
    book = nbformat.read(path, as_version=4)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), \
        f"{path.name} is not executed top to bottom in one kernel: run scripts/execute_notebooks.py"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_is_also_a_png(path):
    book = nbformat.read(path, as_version=4)
    for index, cell in enumerate(book.cells):
        if cell.cell_type != "code":
            continue
        data = [o.get("data", {}) for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
        images = [d["image/png"] for d in data if "image/png" in d]
        assert not [d for d in data if PLOTLY in d and "image/png" not in d], \
            f"{path.name} cell {index}: a plotly figure without its image (GitHub shows it blank)"
        assert len(images) == len(SHOWS.findall(cell.source)), \
            f"{path.name} cell {index}: {len(SHOWS.findall(cell.source))} figures shown, {len(images)} images saved"
        assert all(_png_width(image) == 900 for image in images)
        assert not [d for d in data if PLOTLY in d and "text/html" in d], "GitHub would pick the blank HTML"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_states_the_mode_the_outputs_come_from(path):
    book = nbformat.read(path, as_version=4)
    env = book.metadata.get("rllmsim", {}).get("executed_with")
    assert env is not None, f"{path.name} was not written by scripts/execute_notebooks.py"
    env = {key: value for key, value in env.items() if key != "RLLMSIM_NOTEBOOK_OUT"}  # a file, not a mode
    intro = book.cells[0].source
    assert MODE in intro, f"{path.name}'s first cell does not say which mode its outputs come from"
    stated = intro.split(MODE, 1)[1].split("\n\n", 1)[0]
    if env:
        assert all(f"{key}={value}" in stated for key, value in env.items()), (stated, env)
    else:
        assert "full size" in stated and "RLLMSIM_NOTEBOOK_" not in stated, stated
