"""Capacity planning: the highest request rate each candidate deployment sustains within the SLOs,
and the cheapest deployment for a target rate.

For each candidate (GPU, TP, quantization, KV-cache dtype, and replicas or "auto"), a search on
the request rate (`rllmsim.sweep.search`) finds the highest rate whose SLO metrics stay within
their limits, as Vidur-Search does: probe a start rate, step up (or down) until the SLOs flip, then
bisect until the bracket is within a relative tolerance. The start is the cost model's closed-form
guess of the sustainable rate (`rllmsim.sweep.bracket`; `first_bracket=False`: `start_rate`,
doubling), so most searches bracket the answer in two probes. Every probe (`rllmsim.sweep.probe`)
is one fast-forwarded simulation of `duration_s` seconds of arrivals with the same seed, so probes
at different rates share their arrival pattern and lengths (common random numbers) and the search
compares like with like; failing probes stop early, once a miss is certain.

With `replicas="auto"` the search runs on one replica; a deployment for target rate R then needs
n = ceil(R / r1) replicas, and a final probe of one replica at R / n gives its latencies at the
target. Round-robin splits a bursty stream into smoother ones, so this is conservative for Gamma
arrivals with CV > 1. Cost is n x TP x the catalog's $/GPU-hour; $ per million output tokens
divides it by R x the mean output length.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from rllmsim.cost.base import CostModel
from rllmsim.cost.select import cost_model_for
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.fidelity import fidelity
from rllmsim.simulation import WorkloadSpec
from rllmsim.specs import load_gpu, load_model
from rllmsim.sweep.bracket import estimate_rate, workload_lengths
from rllmsim.sweep.dominance import (bound_check, estimated_cost, first_wave, incumbent, reusable,
                                     unrounded_cost)
from rllmsim.sweep.executors import Executor, InlineExecutor
from rllmsim.sweep.plan_pd import candidate_pools
from rllmsim.sweep.plan_result import PlanResult
from rllmsim.sweep.pricing import usd_per_million_tokens
from rllmsim.sweep.probe import REPORTED, ProbeSpec, run_probe
from rllmsim.sweep.search import bisect_rate
from rllmsim.sweep.slo import SLO

#: --search: "cheapest" searches fully only candidates that can still be the cheapest; "all", every one
SEARCH_MODES = ("cheapest", "all")
ENGINE_FIELDS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "gpu_memory_utilization",
                 "block_size", "enable_chunked_prefill", "num_gpu_blocks_override")


@dataclass(frozen=True)
class Candidate:
    """One deployment shape to try; replicas None means as many as the target rate needs."""

    gpu: str
    tp: int = 1
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    replicas: int | None = None
    prefill: int = 0  # with decode: a disaggregated unit of this many prefill and decode instances
    decode: int = 0

    @property
    def instances(self) -> int:
        """Engine instances per replica: 1, or a disaggregated unit's prefill + decode."""
        return self.prefill + self.decode if self.prefill else 1

    @property
    def label(self) -> str:
        parts = [self.gpu, f"tp{self.tp}"]
        if self.quantization:
            parts.append(self.quantization)
        if self.kv_cache_dtype != "auto":
            parts.append(f"kv-{self.kv_cache_dtype}")
        if self.prefill:
            parts.append(f"{self.prefill}P{self.decode}D")
        if self.replicas is not None:
            parts.append(f"x{self.replicas}")
        return " ".join(parts)


@dataclass(frozen=True)
class PlanSettings:
    """Everything but the candidate: plain data, shipped to workers."""

    model: str
    target_rate: float
    slos: tuple[SLO, ...]
    workload: Mapping[str, Any] = field(default_factory=dict)
    engine: Mapping[str, Any] = field(default_factory=dict)
    router: str = "round-robin"
    duration_s: float = 1800.0
    min_requests: int = 200
    max_requests: int = 6000
    warmup: float = 0.25
    early_stop: bool = True
    seed: int = 0
    more_seeds: tuple[int, ...] = ()  # searched too; each candidate is sized by its worst seed
    rel_tol: float = 0.05
    max_probes: int = 12
    start_rate: float = 1.0
    min_rate: float = 0.01
    pareto_metric: str = "e2el_p99"
    verify: bool = False
    first_bracket: bool = True  # start at the cost model's guess; False: at start_rate, doubling
    search: str = "cheapest"  # "cheapest": branch and bound (rllmsim.sweep.dominance); "all": every candidate fully

    def __post_init__(self) -> None:
        if not self.slos:
            raise ConfigError("plan needs at least one SLO, e.g. --slo ttft_p99=10s --slo tpot_p99=80ms")
        if not (self.target_rate > 0 and math.isfinite(self.target_rate)):
            raise ConfigError(f"--rate (the target) must be a finite number > 0 req/s, got {self.target_rate}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"--warmup must be in [0, 1), got {self.warmup}")
        if not 0 < self.rel_tol < 1:
            raise ConfigError(f"--tolerance must be in (0, 1), got {self.rel_tol}")
        if not self.duration_s > 0:
            raise ConfigError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if not 10 <= self.min_requests <= self.max_requests:
            raise ConfigError(f"requests per probe: need 10 <= --min-requests ({self.min_requests}) "
                              f"<= --max-requests ({self.max_requests})")
        if self.max_probes < 2:
            raise ConfigError(f"--max-probes must be >= 2, got {self.max_probes}")
        if not isinstance(self.first_bracket, bool):
            raise ConfigError(f"first_bracket must be True or False (--[no-]first-bracket), got {self.first_bracket!r}")
        if self.search not in SEARCH_MODES:
            raise ConfigError(f"--search must be one of {', '.join(SEARCH_MODES)}, got {self.search!r}")
        if not self.start_rate > 0:
            raise ConfigError(f"--start-rate must be > 0, got {self.start_rate}")
        if self.workload.get("arrival", "gamma") not in ("poisson", "gamma", "constant"):
            raise ConfigError("plan searches over the request rate, so it needs open-loop arrivals "
                              "(--arrival poisson, gamma or constant), not "
                              f"{self.workload.get('arrival')!r}")
        metric, _, stat = self.pareto_metric.partition("_")
        if metric not in ("ttft", "tpot", "e2el") or not stat:
            raise ConfigError(f"--pareto-metric must look like e2el_p99 or ttft_p90, got {self.pareto_metric!r}")
        full = WorkloadSpec(**{**self.workload, "rate": self.target_rate, "num_requests": self.min_requests})
        object.__setattr__(self, "workload", {k: v for k, v in full.to_dict().items()
                                              if k not in ("rate", "num_requests")})

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every seed a candidate is searched under, the first (`seed`) first."""
        return (self.seed, *(s for s in self.more_seeds if s != self.seed))

    @property
    def probe_spec(self) -> ProbeSpec:
        return self.probe_spec_for(self.seed)

    def probe_spec_for(self, seed: int) -> ProbeSpec:
        return ProbeSpec(workload=dict(self.workload), slos=self.slos, router=self.router, seed=seed,
                         duration_s=self.duration_s, min_requests=self.min_requests,
                         max_requests=self.max_requests, warmup=self.warmup, early_stop=self.early_stop,
                         extra_metrics=(self.pareto_metric,))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["slos"] = [slo.to_dict() for slo in self.slos]
        out["workload"] = dict(self.workload)
        out["engine"] = dict(self.engine)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PlanSettings":
        values = dict(data)
        values["slos"] = tuple(SLO.from_dict(s) for s in values["slos"])
        values["more_seeds"] = tuple(values.get("more_seeds", ()))
        return cls(**values)


# -- probes --------------------------------------------------------------------------------------

def build_candidate_deployment(settings: PlanSettings, candidate: Candidate, replicas: int) -> Deployment:
    return Deployment(model=load_model(settings.model), gpu=load_gpu(candidate.gpu), tp=candidate.tp,
                      replicas=replicas, quantization=candidate.quantization,
                      kv_cache_dtype=candidate.kv_cache_dtype, **dict(settings.engine))


# -- the search ----------------------------------------------------------------------------------

def search_candidate(task: Mapping[str, Any]) -> dict[str, Any]:
    """Worker entry: the max sustainable rate of one candidate and what it costs at the target."""
    settings = PlanSettings.from_dict(task["settings"])
    candidate = Candidate(**task["candidate"])
    started = time.perf_counter()
    row: dict[str, Any] = {"label": candidate.label, **dataclasses.asdict(candidate),
                           "replicas_mode": "auto" if candidate.replicas is None else "fixed"}
    try:
        unit = build_candidate_deployment(settings, candidate, candidate.replicas or 1)
        pools = candidate_pools(unit, candidate.prefill, candidate.decode, 1)
    except ConfigError as err:
        row.update(status="infeasible", reason=str(err), probes=[], wall_s=time.perf_counter() - started)
        return row
    row["num_gpu_blocks"] = unit.num_gpu_blocks if pools is None else pools.decode.num_gpu_blocks

    def simulate(spec: ProbeSpec, rate: float) -> dict[str, Any]:
        return run_probe(spec, unit, rate, pools)

    cost = cost_model_for(unit)  # the probes' cost model: run_simulation's default
    trust = fidelity(unit, cost.provenance())
    if trust is not None:
        row["fidelity"] = trust["line"]
    price = unit.gpu.price_per_gpu_hour_usd
    row["price_per_gpu_hour_usd"] = price
    cap = settings.target_rate  # nothing is gained by searching past the target
    guess = (task["rate_estimate"] if "rate_estimate" in task else first_guess(settings, candidate, unit, cost)) \
        if settings.first_bracket else None
    row["rate_estimate"] = guess if guess is not None else float("nan")
    known: list[dict[str, Any]] = list(task.get("known_probes", ()))  # run for it already: reused, not re-run
    bound: list[dict[str, Any]] = []
    if task.get("incumbent_usd_h") is not None:
        dominated, bound = bound_check(settings.probe_spec, simulate, settings.target_rate, task["incumbent_usd_h"],
                                       candidate.instances * candidate.tp * price, candidate.replicas, known)
        if dominated is not None:
            row.update(status="dominated", meets_target=False, max_rate=float("nan"), probes=bound,
                       wall_s=time.perf_counter() - started, **dominated)
            return row
    best, fail, probes, spec = _search_every_seed(settings, unit, simulate, cap, guess,
                                                  settings.target_rate if candidate.replicas is None else None,
                                                  known + bound)
    probes[:0] = [p for p in bound if all(p is not q for q in probes)]  # the bound's pass, off the search's path
    by_seed = {p["seed"]: p["rate"] for p in probes if p.get("best_of_seed")}
    row["max_rate_by_seed"] = ", ".join(f"{seed}: {by_seed.get(seed, 0.0):.4g}" for seed in settings.seeds)
    row["max_rate_seed_spread_pct"] = (100.0 * (max(by_seed.values()) / min(by_seed.values()) - 1)
                                       if len(by_seed) == len(settings.seeds) > 1 else 0.0)

    row["max_rate"] = best["rate"] if best else 0.0
    row["max_rate_capped"] = bool(best is not None and fail is None and best["rate"] >= cap)
    row["rate_bracket_high"] = fail
    if best is None:
        lowest = [p for p in probes if p["seed"] == spec.seed][-1]  # the failing seed's last, lowest probe
        row.update(status="unsustainable", probes=probes, wall_s=time.perf_counter() - started,
                   reason=f"misses the SLOs even at {lowest['rate']:.3g} req/s ({lowest['violated']})"
                          + (f" at seed {spec.seed}" if len(settings.seeds) > 1 else ""))
        return row
    at_target: dict[str, Any] | None
    reason = ""
    if candidate.replicas is None:
        replicas = max(1, math.ceil(settings.target_rate / best["rate"] - 1e-9))
        at_target = None
        for _ in range(4):  # the bisection's pass at max_rate should carry over; if noise says not, add one
            at_target = _already_probed(probes, spec.seed, settings.target_rate / replicas)
            if at_target is None:  # often the search's own probe: it snaps to target / n
                at_target = simulate(spec, settings.target_rate / replicas)
                at_target.update(stage="at-target", seed=spec.seed)
                probes.append(at_target)
            if at_target["ok"]:
                break
            replicas += 1
        meets = bool(at_target and at_target["ok"])
        if not meets:
            reason = f"one replica at {settings.target_rate / replicas:.3g} req/s misses {at_target['violated']}"
        elif settings.verify and replicas > 1:
            full = build_candidate_deployment(settings, candidate, replicas)
            at_target = run_probe(spec, full, settings.target_rate,
                                  candidate_pools(unit, candidate.prefill, candidate.decode, replicas))
            at_target["stage"] = "verify"
            probes.append(at_target)
            meets = at_target["ok"]
            if not meets:
                reason = f"{replicas} replicas simulated whole at the target miss {at_target['violated']}"
    else:
        replicas = candidate.replicas
        meets = math.isclose(best["rate"], settings.target_rate)  # the search stops at the target
        at_target = best if meets else None
        if not meets:
            reason = f"sustains {row['max_rate']:.3g} < target {settings.target_rate:g} req/s"
    gpus = replicas * candidate.instances * candidate.tp
    usd_h = gpus * price
    row.update(status="ok", reason=reason, replicas=replicas, gpus=gpus, meets_target=meets,
               cost_per_hour_usd=usd_h, headroom_is_lower_bound=row["max_rate_capped"],
               # auto sizing searched one replica's rate; a fixed count searched the whole deployment's
               headroom_pct=100.0 * (row["max_rate"] * (replicas if candidate.replicas is None else 1)
                                     / settings.target_rate - 1))
    if at_target is not None:
        out_tokens_s = settings.target_rate * at_target["mean_output_tokens"]
        row["usd_per_million_output_tokens"] = usd_per_million_tokens(usd_h, out_tokens_s)
        row["output_tokens_per_s_per_gpu"] = out_tokens_s / gpus
        row["mean_output_tokens"] = at_target["mean_output_tokens"]
        for name in dict.fromkeys(list(REPORTED) + [s.name for s in settings.slos] + [settings.pareto_metric]):
            row[f"at_target_{name}"] = at_target.get(name, float("nan"))
    row["probes"] = probes
    row["wall_s"] = time.perf_counter() - started
    return row


def first_guess(settings: PlanSettings, candidate: Candidate, unit: Deployment, cost: CostModel,
                lengths: tuple[np.ndarray, np.ndarray] | None = None) -> float | None:
    """The closed-form sustainable rate of `unit` (all its replicas; a disaggregated unit: its
    decode instances, `rllmsim.sweep.plan_pd`), where its search starts; `lengths`: the probes'
    prompt and output lengths, if already drawn."""
    prompt, output = lengths or workload_lengths(dict(settings.workload), settings.seed, unit.model.name)
    one = estimate_rate(unit, cost, prompt, output, settings.slos)
    return None if one is None else one * unit.replicas * (candidate.decode or 1)


def _already_probed(probes: list[dict[str, Any]], seed: int, rate: float) -> dict[str, Any] | None:
    """A probe already run at `rate` under `seed`: the same simulation, so the same verdict."""
    return next((p for p in probes if p.get("seed") == seed and math.isclose(p["rate"], rate)), None)


def _search_every_seed(settings: PlanSettings, unit: Deployment,
                       simulate: Callable[[ProbeSpec, float], dict[str, Any]], cap: float, guess: float | None,
                       sizing_target: float | None, known: list[dict[str, Any]]):
    """Search the candidate's rate under every seed; the worst seed's result sizes it (a rate one
    seed's traffic sustains and another's does not is not sustainable). The first seed starts at
    `guess` (None: at start_rate, doubling), each later one at the previous seed's answer.
    Returns the worst seed's best and failing rate, every probe (each tagged with its seed; each
    seed's best marked), and that seed's probe spec for the probes at the target. `known`: probes of this
    candidate already run (the bound's, an earlier search's), returned again instead of simulated
    twice."""
    worst: tuple[dict[str, Any] | None, float | None, ProbeSpec] | None = None
    probes: list[dict[str, Any]] = []
    for seed in settings.seeds:
        spec = settings.probe_spec_for(seed)
        start = guess if guess is not None else settings.start_rate * unit.replicas

        def evaluate(rate: float, spec: ProbeSpec = spec) -> dict[str, Any]:
            done = _already_probed(known, spec.seed, rate)
            return done if done is not None else simulate(spec, rate)

        best, fail, tried = bisect_rate(evaluate, start, cap, settings.rel_tol,
                                        settings.max_probes, settings.min_rate, guessed=guess is not None,
                                        sizing_target=sizing_target)
        for p in tried:
            p.update(stage="search", seed=seed)
        if best is not None:
            best["best_of_seed"] = True
            guess = best["rate"] if guess is not None else None
        probes += tried
        if worst is None or (worst[0] is not None and (best is None or best["rate"] < worst[0]["rate"])):
            worst = (best, fail, spec)
    assert worst is not None
    return worst[0], worst[1], probes, worst[2]


# -- the whole plan --------------------------------------------------------------------------------

def candidates_from(gpus: Iterable[str], tps: Iterable[int], quantizations: Iterable[str | None],
                    kv_dtypes: Iterable[str], replicas: Iterable[int | None],
                    pd_ratios: Iterable[tuple[int, int]] = ()) -> list[Candidate]:
    """The grid; each auto-sized shape also as a disaggregated unit of every `pd_ratios` x:y."""
    out = []
    for gpu in gpus:
        name = load_gpu(gpu).name
        for tp in tps:
            for quant in quantizations:
                for kv in kv_dtypes:
                    for n in replicas:
                        colocated = Candidate(name, int(tp), None if quant in (None, "", "none") else quant, kv, n)
                        out.append(colocated)
                        if n is None:
                            out += [dataclasses.replace(colocated, prefill=x, decode=y) for x, y in pd_ratios]
    return list(dict.fromkeys(out))


def run_plan(settings: PlanSettings, candidates: list[Candidate], executor: Executor | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None) -> PlanResult:
    """Search the candidates: every one fully (`search="all"`), or bounded by the cheapest of the
    first wave (`"cheapest"`, `rllmsim.sweep.dominance`). `on_result` is called once per candidate
    as its search ends, for progress; a second wave run again replaces those rows in the result.

    The second wave does not wait for the first: it starts with the bound the first wave's
    estimate predicts, so both keep every worker busy. A row depends only on its candidate and
    its bound, so when the first wave's cheapest costs what was predicted (the usual case) those
    rows are the ones a wait would have given; otherwise the second wave runs again with the real
    bound, reusing every probe already simulated."""
    if not candidates:
        raise ConfigError("plan: no candidate deployments; give --gpus and --tp")
    load_model(settings.model)  # an unknown model is one error, not one per candidate
    executor = executor or InlineExecutor()
    rows: list[dict[str, Any] | None] = [None] * len(candidates)
    if settings.search == "all":
        # widest TP first: those sustain the highest rates, so their probes simulate the most
        # requests, and a pool that starts them last waits on them at the end
        tasks = [_search_task(settings, candidates, i) for i in range(len(candidates))]
        _run_wave(candidates, sorted(tasks, key=lambda t: -t["candidate"]["tp"]), executor, rows, on_result)
        return PlanResult(settings, [r for r in rows if r is not None])
    executor.start(__name__)  # workers import while the estimates below are computed here
    lengths = workload_lengths(dict(settings.workload), settings.seed, load_model(settings.model).name)
    estimates = [_estimate(settings, c, lengths) for c in candidates]
    costs = [estimated_cost(settings.target_rate, c.replicas, rate, usd)
             for c, (rate, usd) in zip(candidates, estimates)]
    first = first_wave(costs)
    rest = [i for i in range(len(candidates)) if i not in set(first)]
    guess = {i: rate for i, (rate, _) in enumerate(estimates)}
    predicted = min(costs[i] for i in first) if first else None
    tasks = [_search_task(settings, candidates, i, guess[i]) for i in first]
    tasks += [_search_task(settings, candidates, i, guess[i], predicted) for i in rest]
    # the longest first: wave one's full searches, then by estimated cost (the nearer a candidate
    # comes to the bound, the likelier a full search, and the slower its bound probe is to fail)
    rank = {i: -math.inf if i in first else unrounded_cost(settings.target_rate, candidates[i].replicas,
                                                                   *estimates[i])
            for i in range(len(candidates))}
    _run_wave(candidates, sorted(tasks, key=lambda t: rank[t["index"]]), executor, rows, on_result)
    bound = incumbent([rows[i] for i in first if rows[i] is not None])
    if predicted is not None and (bound is None or not math.isclose(bound, predicted)):
        known = {i: [reusable(p) for p in rows[i].get("probes", [])] for i in rest if rows[i] is not None}
        again = [_search_task(settings, candidates, i, guess[i], bound, known.get(i)) for i in rest]
        _run_wave(candidates, sorted(again, key=lambda t: rank[t["index"]]), executor, rows, None)
    return PlanResult(settings, [r for r in rows if r is not None])


def _search_task(settings: PlanSettings, candidates: list[Candidate], index: int, guess: float | None | bool = False,
                 bound: float | None = None, known: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A search task; `guess` False: the worker computes the estimate itself."""
    task: dict[str, Any] = {"index": index, "settings": settings.to_dict(),
                            "candidate": dataclasses.asdict(candidates[index])}
    if guess is not False:
        task["rate_estimate"] = guess
    if bound is not None:
        task["incumbent_usd_h"] = bound
    if known:
        task["known_probes"] = known
    return task


def _estimate(settings: PlanSettings, candidate: Candidate,
              lengths: tuple[np.ndarray, np.ndarray]) -> tuple[float | None, float]:
    """(closed-form rate of the candidate's replicas, $/hour of one replica); (None, inf) where it
    does not fit its GPU (its search then reports why)."""
    try:
        unit = build_candidate_deployment(settings, candidate, candidate.replicas or 1)
        candidate_pools(unit, candidate.prefill, candidate.decode, 1)
    except ConfigError:
        return None, math.inf
    usd = candidate.instances * candidate.tp * unit.gpu.price_per_gpu_hour_usd
    return first_guess(settings, candidate, unit, cost_model_for(unit), lengths), usd


def _run_wave(candidates: list[Candidate], tasks: list[dict[str, Any]], executor: Executor,
              rows: list[dict[str, Any] | None], on_result: Callable[[dict[str, Any]], None] | None) -> None:
    """Run the search `tasks`, in this order, on the executor into `rows`."""
    for position, result in executor.imap_unordered(search_candidate, tasks):
        index = tasks[position]["index"]
        if isinstance(result, BaseException):
            result = {"label": candidates[index].label, **dataclasses.asdict(candidates[index]),
                      "status": "error", "reason": f"{type(result).__name__}: {result}", "probes": []}
        rows[index] = result
        if on_result is not None:
            on_result(result)
