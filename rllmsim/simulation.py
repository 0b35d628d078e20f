"""One simulation: a workload spec and a deployment in, a summary and tables out.

This is the single entry point the CLI, sweeps, comparisons and validation all call, so every
path resolves workloads, seeds and cost models the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from rllmsim.cost.base import CostModel
from rllmsim.cost.select import cost_model_for
from rllmsim.cost.speculative import speculative_cost_model
from rllmsim.deployment import Deployment
from rllmsim.disaggregation import Disaggregation
from rllmsim.engine.clients import BatchWaves, Client, ClosedLoop, OpenLoop, Sessions
from rllmsim.engine.cluster import Cluster, SimulationResult
from rllmsim.engine.disaggregated import DisaggregatedCluster, PoolCostModels, pool_cost_models
from rllmsim import checks
from rllmsim.errors import ConfigError
from rllmsim.fidelity import fidelity
from rllmsim.metrics.disaggregated import disaggregated_summary
from rllmsim.metrics.load import load_check
from rllmsim.metrics.speculative import speculative_summary
from rllmsim.metrics.stragglers import DEFAULT_FACTOR
from rllmsim.metrics.summary import summarize
from rllmsim.rng import RngStreams
from rllmsim.workload.arrivals import arrival_times
from rllmsim.workload import sessions
from rllmsim.workload.draw import draw_requests
from rllmsim.workload.table import make_request_table
from rllmsim.workload.traces import read_trace

OPEN_LOOP = ("poisson", "gamma", "constant")
CLOSED = ("closed-loop", "batch-waves")


@dataclass(frozen=True)
class WorkloadSpec:
    """Who sends what, when. `dataset` is one name or a mix like "math-500:0.5,aime-2024:0.5".
    `shared_prefix_tokens` > 0 puts a shared prefix (a system prompt, few-shot examples) of that
    many tokens in front of every prompt, one of `prefix_groups` prefixes per request.

    arrival: poisson | gamma | constant (open loop at `rate`), closed-loop (`concurrency` users),
    batch-waves (batches of `concurrency`), trace (replay `trace`, lengths from the trace), or
    servegen (ServeGen's production DeepSeek-R1 client pool scaled to `rate`; replayed in order
    from `servegen_start_s` seconds into its day when given). `reasoning_budget` caps each
    request's reasoning tokens (a thinking budget; the answer follows).

    `max_concurrency` is `vllm bench serve --max-concurrency`: for open-loop arrivals a cap on the
    requests in flight (None: unbounded); for closed-loop it must equal `concurrency`, since vLLM's
    closed loop is exactly request rate inf with that cap. Batch waves have no vLLM counterpart.

    `turns` > 1 makes each of the `num_requests` open-loop arrivals a conversation of that many
    turns, each sent `think_time_s` after the previous one completes (`workload/sessions.py`).
    """

    arrival: str = "gamma"
    rate: float = 1.5
    cv: float | None = 2.0
    burstiness: float | None = None
    dataset: str = "math-500"
    lengths_file: str | None = None
    max_tokens: int | None = 32768
    num_requests: int = 300
    concurrency: int = 16
    max_concurrency: int | None = None
    think_time_s: float = 0.0
    trace: str | None = None
    trace_format: str = "auto"
    time_scale: float = 1.0
    shared_prefix_tokens: int = 0
    prefix_groups: int = 1
    reasoning_budget: int | None = None
    servegen_start_s: float | None = None
    turns: int = 1

    def __post_init__(self) -> None:
        kinds = OPEN_LOOP + CLOSED + ("trace", "servegen")
        if self.arrival not in kinds:
            raise ConfigError(f"unknown arrival {self.arrival!r}; choose one of: {', '.join(kinds)}")
        if self.arrival == "trace" and not self.trace:
            raise ConfigError("arrival 'trace' needs --trace PATH")
        if self.num_requests < 1:
            raise ConfigError(f"num_requests must be >= 1, got {self.num_requests}")
        if self.arrival in CLOSED and self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        self._check_max_concurrency()
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.shared_prefix_tokens < 0 or self.prefix_groups < 1:
            raise ConfigError("shared_prefix_tokens must be >= 0 and prefix_groups >= 1, got "
                              f"{self.shared_prefix_tokens} and {self.prefix_groups}")
        checks.workload(self)
        sessions.check(self)

    def _check_max_concurrency(self) -> None:
        cap = self.max_concurrency
        if cap is None:
            return
        if cap < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {cap}; omit it for no cap")
        if self.arrival == "batch-waves":
            raise ConfigError("--max-concurrency does not apply to batch-waves; give the batch size with --concurrency")
        if self.arrival == "closed-loop" and cap != self.concurrency:
            raise ConfigError(f"closed-loop users: --max-concurrency {cap} contradicts --concurrency "
                              f"{self.concurrency}; give one of them")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunOutput:
    result: SimulationResult
    requests: pd.DataFrame
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)


def build_workload(spec: WorkloadSpec, streams: RngStreams, model: str | None = None) -> tuple[pd.DataFrame, Client]:
    """The request table and the client that sends it; lengths are those `model` writes."""
    if spec.arrival == "trace":
        return read_trace(spec.trace, spec.trace_format, spec.time_scale), OpenLoop(spec.max_concurrency)
    n = spec.num_requests
    drawn = draw_requests(spec, streams, model)
    prompt, output, labels = drawn.prompt, drawn.output, drawn.labels
    if drawn.arrival_s is not None:
        arrivals, client = drawn.arrival_s, OpenLoop(spec.max_concurrency)
    elif spec.arrival in OPEN_LOOP:
        cv = spec.cv if spec.arrival == "gamma" and spec.burstiness is None else None
        arrivals = arrival_times(spec.arrival, spec.rate, n, streams.stream("arrivals"),
                                 cv=cv, burstiness=spec.burstiness)
        client: Client = OpenLoop(spec.max_concurrency)
    else:
        arrivals = np.zeros(n)
        client = ClosedLoop(spec.concurrency, spec.think_time_s) if spec.arrival == "closed-loop" \
            else BatchWaves(spec.concurrency)
    if spec.turns > 1:
        table = sessions.conversation_table(arrivals, prompt, output, drawn.reasoning, labels, spec.turns)
        table.attrs["lengths_notes"] = drawn.notes
        return table, Sessions(spec.turns, spec.think_time_s)
    group, prefix = _shared_prefixes(spec, n, streams.stream("prefix"))
    table = make_request_table(arrivals, prompt + prefix, output, labels, prefix_group=group,
                               prefix_tokens=prefix, reasoning_tokens=drawn.reasoning)
    table.attrs["lengths_notes"] = drawn.notes
    return table, client


def _shared_prefixes(spec: WorkloadSpec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if spec.shared_prefix_tokens == 0:
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    return rng.integers(0, spec.prefix_groups, size=n), np.full(n, spec.shared_prefix_tokens, dtype=np.int64)


def with_speculation(cost_model: CostModel, deployment: Deployment) -> CostModel:
    """Add the proposer's cost when the deployment speculates (`rllmsim.cost.speculative`)."""
    return speculative_cost_model(cost_model, deployment)


def run_simulation(
    deployment: Deployment,
    workload: WorkloadSpec | pd.DataFrame,
    seed: int = 0,
    cost_model: CostModel | PoolCostModels | None = None,
    router: str = "round-robin",
    fast_forward: bool = True,
    client: Client | None = None,
    slos_s: Mapping[str, float] | None = None,
    straggler_factor: float = DEFAULT_FACTOR,
    disaggregation: Disaggregation | None = None,
) -> RunOutput:
    """Simulate `workload` on `deployment`; a ready request table may stand in for a spec. With
    `disaggregation`, its prefill and decode pools serve it (`deployment` gives the model)."""
    checks.seed(seed)
    checks.straggler_factor(straggler_factor)
    checks.slo_limits(slos_s or {}, "slos_s")
    streams = RngStreams(seed)
    if isinstance(workload, WorkloadSpec):
        table, built_client = build_workload(workload, streams, deployment.model.name)
        workload_config: dict[str, Any] = workload.to_dict()
    else:
        table, built_client, workload_config = workload, OpenLoop(), {"arrival": "table", "num_requests": len(workload)}
    client = client or built_client
    rng = streams.stream("speculation")
    if disaggregation is None:
        cost_model = with_speculation(cost_model or cost_model_for(deployment), deployment)
        cluster = Cluster(deployment, cost_model, table, client, router=router, fast_forward=fast_forward, rng=rng)
    else:
        cost_model = pool_cost_models(disaggregation, cost_model)
        cluster = DisaggregatedCluster(disaggregation, cost_model, table, client, router=router,
                                       fast_forward=fast_forward, rng=rng)
    result = cluster.run()
    requests = result.ledger.to_frame()
    summary = summarize(result, requests, deployment.engine_cores, slos_s, straggler_factor)
    if isinstance(client, Sessions):
        summary["sessions"] = sessions.session_summary(requests, client.turns)
    if disaggregation is not None:
        summary["disaggregated"] = disaggregated_summary(result, requests, disaggregation)
        summary["kv"] = summary["disaggregated"]["decode"]["kv"]
    if deployment.speculative_method:
        summary["speculative"] = speculative_summary(result, requests, deployment)
    load = load_check(requests) if isinstance(client, OpenLoop) else None  # a closed loop adapts its load
    if load is not None:
        summary["load"] = load
    config = {
        "deployment": deployment.to_dict(),
        **({"disaggregation": disaggregation.to_dict()} if disaggregation is not None else {}),
        "workload": workload_config,
        "client": client.name,
        "router": router,
        "fast_forward": fast_forward,
        "cost_model": cost_model.provenance(),
    }
    summary["seed"] = seed
    trust = fidelity(deployment, config["cost_model"])
    if trust is not None:
        summary["fidelity"] = trust
    if table.attrs.get("lengths_notes"):
        summary["lengths_notes"] = list(table.attrs["lengths_notes"])
    summary["config"] = config
    return RunOutput(result, requests, summary, config)
