"""Render the study notebook's findings (RLLMSIM_NOTEBOOK_OUT JSON) as docs/reasoning_study.md's
agreement table, in place, so the doc's numbers are the last run's rather than typed by hand.

Run: RLLMSIM_NOTEBOOK_OUT=findings.json jupyter execute --inplace notebooks/reasoning_serving_study.ipynb
     python scripts/study_agreement_table.py findings.json [docs/reasoning_study.md]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "reasoning_study.md"
HEADER = ["| Finding | Setting | Study | Simulated | Direction | Size | Verdict |", "|---|---|---|---|---|---|---|"]


def _flag(value: bool | None) -> str:
    return {True: "yes", False: "no", None: ""}[value]


def table(rows: list[dict]) -> list[str]:
    return HEADER + [f"| {r['finding']} | {r['setting']} | {r['study']} | {r['simulated']} | "
                     f"{_flag(r['direction agrees'])} | {_flag(r['size agrees'])} | {r['verdict']} |" for r in rows]


def main(findings: Path, doc: Path = DOC) -> None:
    lines = doc.read_text().splitlines()
    start = lines.index(HEADER[0])
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    lines[start:end] = table(json.loads(findings.read_text()))
    doc.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:3]))
