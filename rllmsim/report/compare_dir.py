"""The page of a compare directory, rebuilt from its files.

compare.json holds each variant's summary (seconds, as summary.json), so the delta table is
recomputed from them in today's units and rows ($/hour too); the figures need each variant's
requests and timeline, which only `rllmsim compare --save-runs` keeps (runs/NAME/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from rllmsim.compare.figures import VariantRun, comparison_page
from rllmsim.compare.table import METRICS, delta_frame, priced
from rllmsim.errors import ConfigError
from rllmsim.file_checks import read_json_object, read_run


def compare_report_html(directory: Path, plotlyjs: str = "inline") -> str:
    path = directory / "compare.json"
    doc = read_json_object(path, "comparison")
    variants = doc.get("variants")
    if not isinstance(variants, list) or not variants or not all(_is_variant(v) for v in variants):
        raise ConfigError(f"{path}: field 'variants' must be a list of objects with a name and a summary; "
                          "rewrite it with `rllmsim compare --out`")
    table = delta_frame({v["name"]: priced(v["summary"], _number(v.get("cost_per_hour_usd"))) for v in variants},
                        METRICS)
    legend = [(v["name"], [str(f) for f in v.get("flags") or []],
               (v.get("deployment") or {}).get("num_gpu_blocks", "?")) for v in variants]
    return comparison_page(str(doc.get("title", directory.name)), legend, table, saved_runs(directory, variants),
                           METRICS, plotlyjs)


def saved_runs(directory: Path, variants: list[dict[str, Any]]) -> list[VariantRun]:
    """Each variant's run from runs/NAME/, or none when any is missing (the figures compare all)."""
    folders = [directory / "runs" / v["name"] for v in variants]
    if not all((f / "summary.json").exists() for f in folders):
        return []
    runs = []
    for variant, folder in zip(variants, folders):
        summary, requests, timeline = read_run(folder)
        runs.append(VariantRun(variant["name"], summary, requests, pd.DataFrame(
            columns=["replica", "start_s", "end_s", "running", "waiting", "kv_block_seconds"])
            if timeline is None else timeline))
    return runs


def _is_variant(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("name"), str) and isinstance(value.get("summary"), dict)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
