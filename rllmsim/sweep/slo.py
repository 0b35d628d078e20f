"""Service-level objectives on latency percentiles: `ttft_p99=10s`, `tpot_p99=80ms`, `e2el_p90=600s`.

An SLO names a metric (ttft, tpot, itl, e2el), a statistic (mean, p50, p90, p95, p99) and a limit
with a unit. A bare number is refused: `tpot_p99=80` could mean 80 ms or 80 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from rllmsim.errors import ConfigError

METRICS = ("ttft", "tpot", "itl", "e2el")
STATS = ("mean", "p50", "p90", "p95", "p99")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class SLO:
    metric: str
    stat: str
    limit_s: float

    @property
    def name(self) -> str:
        return f"{self.metric}_{self.stat}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "stat": self.stat, "limit_s": self.limit_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SLO":
        return cls(str(data["metric"]), str(data["stat"]), float(data["limit_s"]))

    def __str__(self) -> str:
        return f"{self.name}<={format_seconds(self.limit_s)}"


def parse_duration(text: Any, where: str) -> float:
    """'80ms' -> 0.08, '10s' -> 10.0, '2min' -> 120.0."""
    match = _DURATION.match(str(text).lower())
    if not match or match.group(2) not in _UNITS:
        raise ConfigError(f"{where}: {text!r} is not a duration with a unit; write e.g. 80ms, 10s or 2min")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_slo(text: str, where: str = "--slo") -> SLO:
    name, sep, limit = str(text).partition("=")
    if not sep:
        name, sep, limit = str(text).partition(":")
    name = name.strip().lower()
    metric, _, stat = name.partition("_")
    if not sep or metric not in METRICS or stat not in STATS:
        raise ConfigError(f"{where} {text!r}: write METRIC_STAT=LIMIT with METRIC one of {', '.join(METRICS)} "
                          f"and STAT one of {', '.join(STATS)}, as in ttft_p99=10s")
    limit_s = parse_duration(limit, f"{where} {name}")
    if limit_s <= 0:
        raise ConfigError(f"{where} {name}: the limit must be > 0, got {limit!r}")
    return SLO(metric, stat, limit_s)


def parse_slos(items: Iterable[str], where: str = "--slo") -> list[SLO]:
    slos: dict[str, SLO] = {}
    for item in items:
        for part in str(item).replace(",", " ").split():
            slo = parse_slo(part, where)
            if slo.name in slos:
                raise ConfigError(f"{where}: {slo.name} given twice")
            slos[slo.name] = slo
    return list(slos.values())


def format_seconds(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    if value < 1:
        return f"{value * 1e3:.4g}ms"
    return f"{value:.4g}s"


def per_request_latencies(requests: pd.DataFrame) -> dict[str, np.ndarray]:
    """TTFT, TPOT and E2EL of completed requests, as the summary computes them (TPOT only for
    requests with more than one output token)."""
    done = requests[requests["finish_s"].notna()]
    out = done["output_tokens"].to_numpy()
    ttft = done["ttft_s"].to_numpy(dtype=float)
    e2el = done["e2el_s"].to_numpy(dtype=float)
    multi = out > 1
    return {"ttft": ttft, "e2el": e2el, "tpot": (e2el[multi] - ttft[multi]) / (out[multi] - 1)}


def statistic(values: np.ndarray, stat: str) -> float:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan")
    if stat == "mean":
        return float(values.mean())
    return float(np.percentile(values, float(stat[1:])))


def summary_value(summary: Mapping[str, Any], slo: SLO) -> float:
    """The SLO's metric from a run summary (`ttft_s: {p99: ...}`); p95 is not in summaries."""
    stats = summary.get(f"{slo.metric}_s", {})
    value = stats.get(slo.stat)
    return float("nan") if value is None else float(value)


def check(values: Mapping[str, float], slos: Iterable[SLO]) -> list[str]:
    """Names of the SLOs violated (a missing or NaN value counts as violated)."""
    bad = []
    for slo in slos:
        value = values.get(slo.name, float("nan"))
        if value is None or not np.isfinite(value) or value > slo.limit_s:
            bad.append(slo.name)
    return bad
