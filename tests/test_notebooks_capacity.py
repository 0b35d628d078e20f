"""The capacity-planning notebooks run top to bottom (reduced sizes, RLLMSIM_NOTEBOOK_QUICK=1)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install 'rllmsim[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="pip install 'rllmsim[notebooks]'")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["capacity_planning.ipynb", "traffic_growth_whatif.ipynb"])
def test_notebook_executes(name, monkeypatch, tmp_path):
    monkeypatch.setenv("RLLMSIM_NOTEBOOK_QUICK", "1")
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert not any(cell.get("outputs") for cell in book.cells if cell.cell_type == "code"), \
        f"{name} is committed with outputs; clear them"
    client = nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [out for cell in book.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors
    text = "\n".join(out.get("text", "") for cell in book.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    if name == "capacity_planning.ipynb":
        assert "Cheapest for 6 req/s" in text
        shown = [out["data"].get("text/html", "") for cell in book.cells if cell.cell_type == "code"
                 for out in cell.get("outputs", []) if out.get("output_type") == "execute_result"]
        assert any("rllmsim run: deepseek-r1-distill-qwen-1.5b" in h and "fidelity:" in h for h in shown)
        assert "meets every SLO" in text or "MISSES " in text  # the chosen deployment, whole, is judged
    else:
        assert "replica sustains" in text and "today's deployment" in text
