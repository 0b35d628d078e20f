"""Side-by-side signed errors of two `rllmsim validate` output folders, as a markdown table.

    python scripts/compare_validations.py BEFORE_DIR AFTER_DIR [--label-before X --label-after Y]

Replays (errors.csv) give one row per metric and statistic; closed-loop runs (mape.csv) one row
per model. docs/validation.md quotes what this prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def _replay_rows(before: Path, after: Path) -> list[str]:
    b = pd.read_csv(before / "errors.csv")
    a = pd.read_csv(after / "errors.csv")
    merged = b.merge(a, on=["metric", "stat"], suffixes=("_b", "_a"))
    rows = []
    for r in merged.itertuples():
        if pd.isna(r.signed_error_b) and pd.isna(r.signed_error_a):
            continue
        unit = "pp" if r.error_unit_a == "pp" else "%"
        rows.append(f"| {r.metric} {r.stat} | {r.signed_error_b:+.1f} {unit} | {r.signed_error_a:+.1f} {unit} |")
    return rows


def _closed_loop_rows(before: Path, after: Path) -> list[str]:
    b = pd.read_csv(before / "mape.csv")
    a = pd.read_csv(after / "mape.csv")
    if "start" in b.columns:  # older outputs simulated two starts; show each
        b = b.assign(model=b["model"] + " (" + b["start"] + ")")
    rows = []
    for r in a.itertuples():
        if r.cases == 0:
            continue
        for old in b[b["model"].str.startswith(r.model)].itertuples():
            rows.append(f"| {old.model} | {old.ttft_mape_pct:.1f} / {old.tpot_mape_pct:.1f} % "
                        f"| {r.ttft_mape_pct:.1f} / {r.tpot_mape_pct:.1f} % |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--label-before", default="before")
    parser.add_argument("--label-after", default="after")
    args = parser.parse_args()
    closed = (args.after / "mape.csv").exists()
    head = "model (TTFT / TPOT MAPE)" if closed else "metric"
    print(f"| {head} | {args.label_before} | {args.label_after} |\n|---|---|---|")
    rows = _closed_loop_rows(args.before, args.after) if closed else _replay_rows(args.before, args.after)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
