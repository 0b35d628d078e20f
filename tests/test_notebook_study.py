"""The reasoning-serving study notebook runs end to end (reduced sizes) and states every finding."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "reasoning_serving_study.ipynb"
FINDINGS = {"KV usage, non-reasoning", "KV usage, reasoning peak", "KV usage, reasoning peak order", "Stragglers",
            "Running time vs difficulty", "Token budget", "Weight quantization", "FP8 KV cache",
            "n-gram speculative decoding", "Prefix caching", "Gamma workload, KV mean", "Gamma workload, saturation"}


def test_study_notebook_runs_and_fills_the_agreement_table(tmp_path, monkeypatch):
    out = tmp_path / "findings.json"
    monkeypatch.setenv("RLLMSIM_NOTEBOOK_SCALE", "0.2")
    monkeypatch.setenv("RLLMSIM_NOTEBOOK_OUT", str(out))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "RLLMSIM_NOTEBOOK_SCALE" in params[0].source
    started = time.perf_counter()
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    elapsed = time.perf_counter() - started
    assert elapsed < 120, f"the reduced notebook took {elapsed:.0f} s; CI allows about 2 minutes"

    rows = json.loads(out.read_text())
    assert {r["finding"] for r in rows} == FINDINGS
    for row in rows:
        assert row["study"] and row["simulated"], row
        assert row["verdict"] in ("agrees", "direction only", "size disagrees", "disagrees",
                                  "direction agrees; no study number", "not checked"), row
        assert row["direction agrees"] in (True, False, None) and row["size agrees"] in (True, False, None)
    table = next(c for c in nb.cells if "agreement-table" in c.metadata.get("tags", []))
    shown = "".join(o.get("text", "") + json.dumps(o.get("data", {})) for o in table.outputs)
    assert "verdict" in shown and "Gamma workload, KV mean" in shown
