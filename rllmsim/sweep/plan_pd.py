"""Prefill/decode-disaggregated candidates for `plan --pd-ratios 1:3,2:6`.

A ratio x:y is a serving *unit* of x prefill and y decode instances, each of the candidate's GPU
and TP, joined by the default KV link (`rllmsim.engine.kv_transfer`), as `simulate
--prefill-replicas x --decode-replicas y` builds it. The plan treats a unit as it treats one
colocated replica: the search finds the highest rate one unit sustains, the deployment needs
n = ceil(target / that rate) units (n x, n y instances), and a unit costs (x + y) x TP x the GPU's
$/hour. A probe's request count is bounded per instance, as a colocated deployment's is per
replica.

The search starts at a guess: y times the closed-form rate of one colocated replica
(`rllmsim.sweep.bracket`). Reasoning requests spend nearly all their time decoding, and a decode
instance relieved of prefills is at least as fast as a colocated one, so the decode pool sets the
pace; the guess only picks where the first probe goes, and every reported rate is a probe's
verdict.
"""

from __future__ import annotations

from typing import Any, Iterable

from rllmsim.deployment import Deployment
from rllmsim.disaggregation import Disaggregation, disaggregation_from_options
from rllmsim.errors import ConfigError


def parse_pd_ratios(values: Iterable[Any] | str | None) -> list[tuple[int, int]]:
    """`"1:3,2:6"` (or a list of such texts or of (x, y) pairs) -> [(1, 3), (2, 6)]."""
    if values is None:
        return []
    items: list[Any] = [values] if isinstance(values, str) else list(values)
    ratios: list[tuple[int, int]] = []
    for item in items:
        parts = [item] if not isinstance(item, str) else [p for p in item.split(",") if p.strip()]
        for part in parts:
            try:
                x, y = (int(v) for v in (part.split(":") if isinstance(part, str) else part))
            except (TypeError, ValueError):
                raise ConfigError(f"--pd-ratios takes PREFILL:DECODE instance counts such as 1:3,2:6, got {part!r}") \
                    from None
            if x < 1 or y < 1:
                raise ConfigError(f"--pd-ratios: both pools need at least one instance, got {x}:{y}; e.g. 1:3")
            ratios.append((x, y))
    return list(dict.fromkeys(ratios))


def candidate_pools(deployment: Deployment, prefill: int, decode: int, units: int) -> Disaggregation | None:
    """The pools of `units` units of `prefill` x `decode` instances over the shared `deployment`
    (None for a colocated candidate, prefill = decode = 0)."""
    if not prefill:
        return None
    return disaggregation_from_options({"prefill_replicas": prefill * units, "decode_replicas": decode * units},
                                       deployment)
