"""`rllmsim.plan(slo=..., rate=...)`: the cheapest deployment that serves a target rate within SLOs.

For each candidate (GPU x TP x quantization x KV-cache dtype x replicas) a bisection finds the
highest rate it sustains within the SLOs (`rllmsim.sweep.plan`). Grids take a list, one value or
the CLI's comma-separated text (`tp=[1, 2]`, `tp="1,2"`); the workload keywords are those of
`rllmsim.simulate`, `rate` the target. `rllmsim plan` calls `prepare` and `PlanSetup.run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from rllmsim import checks
from rllmsim.api import kwargs
from rllmsim.api.display import frame_html
from rllmsim.commands.options import DEFAULT_MODEL, workload_from_options
from rllmsim.engine.router import parse_router
from rllmsim.errors import ConfigError
from rllmsim.specs import load_model
from rllmsim.sweep.executors import default_workers, make_executor
from rllmsim.sweep.plan import Candidate, PlanSettings, candidates_from, run_plan
from rllmsim.sweep.plan_pd import parse_pd_ratios
from rllmsim.sweep.plan_result import PlanResult
from rllmsim.sweep.plan_output import candidates_frame, format_plan, probes_frame, write_plan
from rllmsim.sweep.slo import parse_slos

DEFAULT_GPUS = "h100-sxm,h200,b200,a100-80gb"
OWN_KEYWORDS = ("slo", "model", "gpus", "tp", "quantization", "kv_cache_dtype", "replicas", "max_num_seqs",
                "max_num_batched_tokens", "max_model_len", "gpu_memory_utilization", "block_size",
                "enable_chunked_prefill", "router", "duration_s", "min_requests", "max_requests", "warmup",
                "tolerance", "max_probes", "start_rate", "first_bracket", "search", "pareto_metric", "verify", "seed",
                "seeds", "pd_ratios", "workers", "ray", "ray_address")

Grid = str | int | Iterable[Any]


class Plan:
    """A finished plan: `candidates` and `probes` (DataFrames), `cheapest` and `pareto` (rows as
    dicts), `text` (the table `rllmsim plan` prints) and `save(dir)` for plan.json and its tables."""

    def __init__(self, result: PlanResult) -> None:
        self.result = result

    @property
    def candidates(self) -> pd.DataFrame:
        return candidates_frame(self.result)

    @property
    def probes(self) -> pd.DataFrame:
        return probes_frame(self.result)

    @property
    def cheapest(self) -> dict[str, Any] | None:
        return self.result.cheapest

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return self.result.pareto

    @property
    def text(self) -> str:
        return format_plan(self.result)

    def save(self, path: str | Path) -> Path:
        """plan.json, candidates.parquet and probes.parquet into `path`; `rllmsim report` draws them."""
        return write_plan(self.result, Path(path))

    def _title(self) -> str:
        s = self.result.settings
        return f"{s.model} at {s.target_rate:g} req/s within {', '.join(str(x) for x in s.slos)}"

    def __repr__(self) -> str:
        best = self.cheapest
        found = f"cheapest {best['replicas']} x {best['label']}" if best else "no candidate meets the target"
        return f"<Plan {self._title()}: {len(self.result.rows)} candidates, {found}>"

    def _repr_html_(self) -> str:
        shown = [c for c in ("rank", "label", "max_rate", "replicas", "gpus", "cost_per_hour_usd",
                             "usd_per_million_output_tokens", "status", "reason") if c in self.candidates.columns]
        return frame_html(f"rllmsim plan: {self._title()}", self.candidates[shown].set_index("label"),
                          note=".candidates, .probes, .cheapest, .pareto, .text, .save(dir)")


@dataclass
class PlanSetup:
    """A checked plan, not yet searched: the settings, the candidate grid and where to run it."""

    settings: PlanSettings
    candidates: list[Candidate]
    workers: int | None = None
    ray: bool = False
    ray_address: str | None = None

    def header(self) -> str:
        s = self.settings
        return (f"plan: {len(self.candidates)} candidates for {s.model} at {s.target_rate:g} req/s; SLOs "
                + ", ".join(str(slo) for slo in s.slos))

    def run(self, on_result: Callable[[dict[str, Any]], None] | None = None) -> Plan:
        """Search every candidate (in parallel: `workers` processes, default the CPU count, or Ray)."""
        executor = make_executor(self.workers or (None if (self.ray or self.ray_address) else default_workers()),
                                 ray=self.ray, ray_address=self.ray_address)
        try:
            return Plan(run_plan(self.settings, self.candidates, executor, on_result=on_result))
        finally:
            executor.close()


def plan(*, slo: str | Iterable[str], **options: Any) -> Plan:
    """Plan capacity; see `prepare` for the keywords. `slo`: METRIC_STAT=LIMIT with a unit,
    e.g. ["ttft_p99=10s", "tpot_p99=80ms"] or "ttft_p99=10s tpot_p99=80ms"."""
    return prepare(slo=slo, **options).run()


def prepare(*, slo: str | Iterable[str], model: str = DEFAULT_MODEL, gpus: Grid = DEFAULT_GPUS, tp: Grid = "1,2,4,8",
            quantization: Grid = "none", kv_cache_dtype: Grid = "auto", replicas: Grid = "auto",
            max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
            max_model_len: int | None = None, gpu_memory_utilization: float = 0.9, block_size: int = 16,
            enable_chunked_prefill: bool = True, router: str = PlanSettings.router,
            duration_s: float = PlanSettings.duration_s, min_requests: int = PlanSettings.min_requests,
            max_requests: int = PlanSettings.max_requests, warmup: float = PlanSettings.warmup,
            tolerance: float = PlanSettings.rel_tol, max_probes: int = PlanSettings.max_probes,
            start_rate: float = PlanSettings.start_rate, first_bracket: bool = PlanSettings.first_bracket,
            search: str = PlanSettings.search,
            pareto_metric: str = PlanSettings.pareto_metric,
            verify: bool = False, seed: int = 0, seeds: Grid | None = None, pd_ratios: Grid | None = None,
            workers: int | None = None,
            ray: bool = False, ray_address: str | None = None, **workload: Any) -> PlanSetup:
    """Check every grid value and setting before the search starts. `workload`: the workload
    keywords of `simulate`, `rate` the target; `num_requests`, when given, fixes the requests per
    probe (`min_requests` = `max_requests`). `seeds` ("0,1,2", or a list) searches every candidate
    under each seed's traffic and sizes it by the worst (instead of `seed` alone). `first_bracket`:
    start each search at the cost model's estimate of the rate (False: at `start_rate`, doubling).
    `search`: "cheapest" (branch and bound, `rllmsim.sweep.dominance`) or "all" (every candidate fully).
    `pd_ratios` ("1:3,2:6", or pairs): also each auto-sized shape as disaggregated units of x prefill
    and y decode instances (`rllmsim.sweep.plan_pd`)."""
    all_seeds = _ints(seeds, "--seeds") if seeds is not None else [seed]
    if seeds is not None and seed != 0:
        raise ConfigError("give --seed or --seeds, not both (--seeds 0,1,2 searches under each)")
    if not all_seeds:
        raise ConfigError("--seeds takes integers such as 0,1,2")
    for value in all_seeds:
        checks.seed(value, "--seeds" if seeds is not None else "--seed")
    seed = all_seeds[0]
    engine = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
              "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
              "block_size": block_size, "enable_chunked_prefill": enable_chunked_prefill}
    engine = {k: v for k, v in engine.items() if v is not None}
    checks.engine_fields(engine)
    parse_router(router)  # a name, or a cache-aware router with its weights
    given = kwargs.resolve("plan()", workload, allowed=kwargs.names("workload"), extra=OWN_KEYWORDS)
    if "num_requests" in given:
        min_requests = max_requests = given["num_requests"]  # an explicit count fixes it
    spec = workload_from_options({**kwargs.defaults(), **given}).to_dict()
    target = spec.pop("rate")
    spec.pop("num_requests")
    replica_text = ",".join(_texts(replicas))
    replica_choices: list[int | None] = [None] if replica_text.strip().lower() == "auto" \
        else _ints(replica_text, "--replicas")
    settings = PlanSettings(model=model, target_rate=target, slos=tuple(parse_slos(_texts(slo))), workload=spec,
                            engine=engine, router=router, duration_s=duration_s, min_requests=min_requests,
                            max_requests=max_requests, warmup=warmup, seed=seed,
                            more_seeds=tuple(all_seeds[1:]), rel_tol=tolerance,
                            max_probes=max_probes, start_rate=start_rate, first_bracket=first_bracket, search=search,
                            pareto_metric=pareto_metric,
                            verify=verify)
    ratios = parse_pd_ratios(pd_ratios)
    if ratios and None not in replica_choices:
        raise ConfigError("--pd-ratios sizes disaggregated units to the target; add auto to --replicas "
                          "(e.g. --replicas auto) or drop --pd-ratios")
    candidates = candidates_from(_split(gpus), _ints(tp, "--tp"), _split(quantization), _split(kv_cache_dtype),
                                 replica_choices, ratios)
    _check_grid(model, candidates, workers)
    return PlanSetup(settings, candidates, workers, ray, ray_address)


def _texts(values: Grid) -> tuple[str, ...]:
    """One value, a comma-separated text or an iterable of either -> texts, as click's multiple options give."""
    if isinstance(values, (str, int)) or values is None:
        return (str(values),)
    return tuple(str(v) for v in values)


def _split(values: Grid) -> list[str]:
    return [part.strip() for value in _texts(values) for part in value.split(",") if part.strip()]


def _ints(values: Grid, flag: str) -> list[int]:
    try:
        return [int(v) for v in _split(values)]
    except ValueError:
        raise ConfigError(f"{flag} takes integers such as 1,2,4, got {','.join(_texts(values))!r}") from None


def _check_grid(model: str, candidates: list[Candidate], workers: int | None) -> None:
    """Every value of the grid is checked before the search starts (and its progress bar), so a
    typo is one line instead of a table of failed candidates (the seeds are checked with the
    other settings). A candidate that does not fit its GPU, or whose TP does not divide the
    model's heads, is a result, not a mistake."""
    if workers is not None:
        checks.integer(workers, "--workers", minimum=1)
    load_model(model)
    for candidate in candidates:
        checks.tp_size(candidate.tp, "--tp")
        checks.quantization(candidate.quantization, "--quantization")
        checks.kv_cache_dtype(candidate.kv_cache_dtype, "--kv-cache-dtype")
        if candidate.replicas is not None:
            checks.integer(candidate.replicas, "--replicas", minimum=1, fix="give auto or counts such as 1,2,4")
