"""Output lengths by model and dataset, from published means (see model_lengths.toml).

The same benchmark costs a 1.5B distill ~6.0k tokens on MATH-500 and the 32B ~3.7k, so one law
per dataset misrepresents every model but one. `resolve` picks the law of the serving model, or
of its nearest relative with data (same family, closest size) and says which, so a run on a
model without published lengths shows where its lengths came from.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from typing import Any

from rllmsim.workload.lengths import DatasetLengths, LengthDist, get_dataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REASONING_FAMILIES = ("deepseek-r1", "qwen3", "qwq", "llama-3.1-nemotron")
DEFAULT_MODEL = "deepseek-r1-distill-qwen-7b"
# Prompts: the catalog's law for the same questions, or (assumed) for similar ones.
PROMPTS_FROM = {"gsm8k": "gsm8k", "math-500": "math-500", "aime-2024": "aime-2024", "gpqa-diamond": "gpqa-diamond",
                "amc23": "aime-2024", "aime-2025": "aime-2024", "olympiadbench": "math-500"}
ALIASES = {"aime25": "aime-2025", "aime2025": "aime-2025", "amc": "amc23", "amc-23": "amc23",
           "olympiad-bench": "olympiadbench"}
LOW, HIGH = 16, 131072


@lru_cache(maxsize=1)
def _laws() -> dict[str, dict[str, dict[str, Any]]]:
    text = resources.files("rllmsim.workload").joinpath("model_lengths.toml").read_text("utf-8")
    return tomllib.loads(text)["models"]


def model_datasets() -> list[str]:
    """Datasets with per-model laws."""
    return sorted(PROMPTS_FROM)


def _size_b(name: str) -> float | None:
    m = re.search(r"(\d+(?:\.\d+)?)b(?:$|-)", name)
    return float(m.group(1)) if m else None


def nearest_model(model: str, dataset: str) -> str | None:
    """The model with a law for `dataset` nearest to `model`: itself, else the longest shared name
    prefix (its family), then the closest size; None for a model outside the reasoning families."""
    name = model.lower().split("/")[-1]
    laws = _laws()
    have = [m for m in laws if dataset in laws[m]]
    if name in have:
        return name
    family = next((f for f in REASONING_FAMILIES if name.startswith(f)), None)
    if family is None:
        return None
    kin = [m for m in have if m.startswith(family)] or have

    def prefix(m: str) -> int:
        return next((i for i, (a, b) in enumerate(zip(name, m)) if a != b), min(len(name), len(m)))

    size = _size_b(name)
    def closeness(m: str) -> float:
        other = _size_b(m) or 1.0
        return abs(math.log((size or 1e4) / other))

    return min(kin, key=lambda m: (-prefix(m), closeness(m)))


def resolve(dataset: str, model: str | None) -> tuple[DatasetLengths, str | None] | None:
    """(the lengths `model` writes on `dataset`, a note when they are a relative's), or None when
    there is no per-model law for this pair (the catalog's dataset then stands)."""
    key = ALIASES.get(dataset, dataset)
    if key not in PROMPTS_FROM:
        try:
            key = get_dataset(dataset).name
        except Exception:
            return None
        if key not in PROMPTS_FROM:
            return None
    source = nearest_model(model or DEFAULT_MODEL, key)
    note = None
    if source is None:
        if key in ("gsm8k", "math-500", "aime-2024", "gpqa-diamond"):
            return None  # a non-reasoning model keeps the catalog's law
        source = DEFAULT_MODEL
    if source != (model or "").lower().split("/")[-1]:
        note = f"no published lengths for {model} on {key}; using {source}'s (nearest relative)"
    law = _laws()[source][key]
    output = LengthDist("lognormal", float(law["median"]), float(law["sigma"]), LOW, HIGH)
    base = get_dataset(PROMPTS_FROM[key])
    lengths = replace(base, name=key, kind="reasoning", model=source, provenance=str(law["provenance"]),
                      output=output, max_total=None, reported_mean=float(law["published_mean"]))
    return lengths, note
