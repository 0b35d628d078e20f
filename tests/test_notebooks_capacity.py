"""The capacity-planning notebooks run top to bottom (reduced sizes, RLLMSIM_NOTEBOOK_QUICK=1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install 'rllmsim[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="pip install 'rllmsim[notebooks]'")
pytest.importorskip("tqdm", reason="pip install 'rllmsim[notebooks]'")  # the notebooks' progress bars

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["capacity_planning.ipynb", "traffic_growth_whatif.ipynb"])
def test_notebook_executes(name, monkeypatch, tmp_path):
    monkeypatch.setenv("RLLMSIM_NOTEBOOK_QUICK", "1")
    book = nbformat.read(NOTEBOOKS / name, as_version=4)  # executed in memory: the shipped outputs stay
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
        # the chosen deployment, simulated whole, is judged against the notebook's SLOs, and a miss said
        whole = re.search(r"TTFT p99 ([\d.]+)s, TPOT p99 ([\d.]+)ms, E2EL p90 ([\d.]+)s", text)
        limits = (("ttft_p99", 10.0), ("tpot_p99", 80.0), ("e2el_p90", 600.0))
        missed = [name for (name, limit), value in zip(limits, map(float, whole.groups())) if value > limit]
        assert (f"MISSES {', '.join(missed)} when simulated whole" if missed else "meets every SLO") in text
    else:
        assert "replica sustains" in text and "today's deployment" in text
