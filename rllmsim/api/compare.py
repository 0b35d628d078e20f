"""`rllmsim.compare(variants, ...)`: one workload and seed under several deployment variants.

`variants` is a dict, name -> the deployment keywords that variant changes (`{"baseline": {},
"fp8kv": {"kv_cache_dtype": "fp8"}}`), or the CLI's `NAME:FLAGS` strings (`["baseline:",
"fp8kv:--kv-cache-dtype=fp8"]`); the first is the baseline. The other keywords are those of
`rllmsim.simulate`, shared by every variant. `rllmsim compare` calls `prepare` and `run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from rllmsim import checks
from rllmsim.api import kwargs
from rllmsim.api.simulate import Goodput, deployment_of, refuse
from rllmsim.commands.options import parse_goodput, with_trace_model, workload_from_options
from rllmsim.compare import Comparison, Variant, parse_variants, run_comparison
from rllmsim.disaggregation import disaggregation_from_options
from rllmsim.errors import ConfigError
from rllmsim.metrics.stragglers import DEFAULT_FACTOR
from rllmsim.simulation import WorkloadSpec

OWN_KEYWORDS = ("variants", "workload", "seed", "goodput", "straggler_factor", "step_by_step", "progress")

Variants = Mapping[str, Mapping[str, Any]] | Sequence[str]


@dataclass
class ComparisonSetup:
    """A resolved comparison, not yet run."""

    variants: list[Variant]
    workload: WorkloadSpec | pd.DataFrame
    seed: int = 0
    slos_s: Mapping[str, float] | None = None
    straggler_factor: float = DEFAULT_FACTOR
    fast_forward: bool = True

    def run(self, progress: Callable[[str], None] | None = None) -> Comparison:
        return run_comparison(self.variants, self.workload, seed=self.seed, slos_s=self.slos_s,
                              straggler_factor=self.straggler_factor, fast_forward=self.fast_forward,
                              progress=progress)


def compare(variants: Variants, *, workload: WorkloadSpec | pd.DataFrame | None = None, seed: int = 0,
            goodput: Goodput = None, straggler_factor: float = DEFAULT_FACTOR, step_by_step: bool = False,
            progress: Callable[[str], None] | None = None, **options: Any) -> Comparison:
    """Run the shared workload under every variant; the `Comparison` holds each run's summary
    (`.summaries()`), the metric table with deltas against the first variant (`.table`, `.wide()`)
    and `.save(dir)` for compare.json, compare.csv and compare.html."""
    return prepare(variants, workload=workload, seed=seed, goodput=goodput, straggler_factor=straggler_factor,
                   step_by_step=step_by_step, **options).run(progress)


def prepare(variants: Variants, *, workload: WorkloadSpec | pd.DataFrame | None = None, seed: int = 0,
            goodput: Goodput = None, straggler_factor: float = DEFAULT_FACTOR, step_by_step: bool = False,
            **options: Any) -> ComparisonSetup:
    """Resolve `compare`'s arguments (see there), checking them all before anything runs."""
    checks.seed(seed)
    checks.straggler_factor(straggler_factor)
    given = kwargs.resolve("compare()", options, extra=OWN_KEYWORDS)
    opts = with_trace_model({**kwargs.defaults(), **given})
    resolved = _variants(variants, opts)
    if workload is None:
        workload = workload_from_options(opts)
    else:
        refuse("compare", "workload", given, kwargs.names("workload"))
    return ComparisonSetup(resolved, workload, seed, parse_goodput(kwargs.goodput_items(goodput)),
                           straggler_factor, not step_by_step)


def _variants(variants: Variants, shared: dict[str, Any]) -> list[Variant]:
    if isinstance(variants, str):
        raise ConfigError(f"compare(): variants must be a list of NAME:FLAGS strings or a dict, got the string "
                          f"{variants!r}; write [{variants!r}]")
    if not isinstance(variants, Mapping):
        if any(not isinstance(shared[k], str) for k in ("model", "gpu")):
            raise ConfigError("compare(): a ModelSpec or GPUSpec needs variants as a dict, "
                              "e.g. {'baseline': {}, 'fp8kv': {'kv_cache_dtype': 'fp8'}}")
        return parse_variants(list(variants), shared)
    if not variants:
        raise ConfigError("compare(): give at least one variant; the first is the baseline, "
                          "e.g. {'baseline': {}, 'fp8kv': {'kv_cache_dtype': 'fp8'}}")
    return [_variant(str(name), changes, shared) for name, changes in variants.items()]


def _variant(name: str, changes: Mapping[str, Any], shared: dict[str, Any]) -> Variant:
    if not isinstance(changes, Mapping):
        raise ConfigError(f"compare(): variant {name!r} must map deployment keywords to values, "
                          f"e.g. {{'kv_cache_dtype': 'fp8'}}, got {changes!r}")
    workload = set(kwargs.names("workload"))
    for key in changes:
        if kwargs.aliases().get(key) in workload:
            raise ConfigError(f"compare(): variant {name!r} sets {key!r}, a workload option; every variant "
                              "runs the same workload, so give it once, outside the variants")
    overrides = kwargs.resolve(f"compare(): variant {name!r}", changes, allowed=kwargs.names("deployment"))
    merged = {**shared, **overrides}
    try:
        deployment = deployment_of(merged)
        pools = disaggregation_from_options(merged, deployment)
    except ConfigError as err:
        raise ConfigError(f"compare(): variant {name!r}: {err}") from None
    flags = tuple(kwargs.flag_text(k, v) for k, v in overrides.items())
    return Variant(name, deployment, router=merged["router"], flags=flags, overrides=overrides, disaggregation=pools)
