"""One probe of a capacity search: simulate a rate on a deployment, judge it against the SLOs.

A probe offers `rate` req/s for `duration_s` seconds of arrivals (bounded by a min and max request
count per replica), so a fast candidate is judged over as long a stretch of traffic as a slow one.
SLO statistics come from the requests arriving after the first `warmup` share: the first requests
meet an empty cluster and would flatter any deployment.

Overloaded probes are the expensive ones (queues and preemptions grow without end) and the
easiest to judge: a watcher process checks the run every few simulated seconds and stops it as
soon as an SLO is certainly missed, for instance when more than 1 % of the measured requests have
already waited longer than the TTFT limit for their first token. Stopping changes no verdict,
only how long a failing probe takes; its partial metrics are lower bounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator, Sequence

import numpy as np

from rllmsim.deployment import Deployment
from rllmsim.disaggregation import Disaggregation
from rllmsim.engine.clients import OpenLoop
from rllmsim.engine.disaggregated import DisaggregatedCluster
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.sweep.slo import SLO, check, per_request_latencies, statistic, summary_value

if TYPE_CHECKING:
    from rllmsim.engine.cluster import Cluster

#: Latencies every probe records, beside those the SLOs name; plan copies each to the
#: at_target_* fields of a candidate. ttfvt_p99 comes from the run summary (every request);
#: kv_peak_pct, preemptions and stragglers are the run's, set in the record after the latencies.
REPORTED = ("ttft_p99", "tpot_p99", "e2el_p50", "e2el_p90", "e2el_p99", "ttfvt_p99", "kv_peak_pct", "preemptions",
            "stragglers")


class SLOMissed(Exception):
    """Raised inside the simulation when an SLO can no longer be met."""


@dataclass(frozen=True)
class ProbeSpec:
    """How probes are run; plain data."""

    workload: dict[str, Any]
    slos: tuple[SLO, ...]
    router: str = "round-robin"
    seed: int = 0
    duration_s: float = 1800.0
    min_requests: int = 200
    max_requests: int = 6000
    warmup: float = 0.25
    early_stop: bool = True
    extra_metrics: tuple[str, ...] = ()

    def num_requests(self, rate: float, replicas: int) -> int:
        per_replica = min(max(rate / replicas * self.duration_s, self.min_requests), self.max_requests)
        return int(math.ceil(per_replica)) * replicas


@dataclass
class WatchedOpenLoop:
    """Open-loop arrivals, plus a watcher that stops the run once an SLO is certainly missed."""

    slos: Sequence[SLO]
    warmup: float
    max_concurrency: int | None = None  # the workload's client cap, kept under the watcher
    name: str = "open-loop"

    def drive(self, cluster: "Cluster") -> Generator:
        cluster.env.process(self._watch(cluster))
        yield from OpenLoop(self.max_concurrency).drive(cluster)

    def _watch(self, cluster: "Cluster") -> Generator:
        env, ledger = cluster.env, cluster.ledger
        n = ledger.size
        first = first_measured(n, self.warmup)
        measured = n - first
        span = float(ledger.arrival[-1] - ledger.arrival[0]) if n else 0.0
        interval = min(max(span / 200.0, 1.0), 30.0)
        checks = [(slo, _allowed_over(slo, measured)) for slo in self.slos
                  if slo.metric in ("ttft", "tpot", "e2el") and slo.stat != "mean"]
        if not checks or measured <= 0:
            return
        while True:
            yield env.timeout(interval)
            now = env.now
            arrival = ledger.arrival[first:]
            finish = ledger.finish[first:]
            live = ~ledger.rejected[first:]
            if not np.isnan(finish[live]).any():
                return
            arrived = arrival <= now
            # a sleeping replica applies its planned steps when they end: its requests' state is
            # as of its clock, so a latency still open counts only up to then (a lower bound)
            clocks = np.array([r.clock for r in cluster.replicas] + [now])
            if not isinstance(cluster, DisaggregatedCluster):
                as_of = np.minimum(now, clocks[ledger.replica[first:]])
            else:  # disaggregated: a request's state lives on two instances; as of the latest time all are current
                as_of = np.full(measured, min(now, float(clocks.min())))
            for slo, allowed in checks:
                over = _certainly_over(slo, ledger, first, as_of, arrived & live)
                if over > allowed:
                    raise SLOMissed(f"{slo.name} > {slo.limit_s:g}s for {over} of {measured} measured requests "
                                    f"by t={now:.0f}s")


def first_measured(n: int, warmup: float) -> int:
    """Index of the first request whose latencies count (request ids follow arrival order)."""
    return min(int(math.ceil(warmup * n)), max(n - 1, 0))


def _allowed_over(slo: SLO, measured: int) -> int:
    """How many of `measured` values may exceed the limit while the q-th percentile can still be
    within it: numpy interpolates between sorted values floor(h) and floor(h) + 1, h = q (n - 1),
    so the percentile is certainly over once value floor(h) itself is."""
    q = float(slo.stat[1:]) / 100.0
    return measured - int(math.floor(q * (measured - 1))) - 1


def _certainly_over(slo: SLO, ledger, first: int, now: np.ndarray, arrived: np.ndarray) -> int:
    """Measured requests whose final value of the SLO's metric already exceeds its limit; `now`
    is, per measured request, the time its recorded state is known to be current."""
    now = np.broadcast_to(now, ledger.arrival[first:].shape)[arrived]
    arrival = ledger.arrival[first:][arrived]
    limit = slo.limit_s
    if slo.metric == "ttft":
        first_token = ledger.first_token[first:][arrived]
        ttft = np.where(np.isnan(first_token), now - arrival, first_token - arrival)
        return int((ttft > limit).sum())
    if slo.metric == "e2el":
        finish = ledger.finish[first:][arrived]
        e2el = np.where(np.isnan(finish), now - arrival, finish - arrival)
        return int((e2el > limit).sum())
    # tpot = (finish - first_token) / (output - 1) >= (now - first_token) / (target - 1) while running
    first_token = ledger.first_token[first:][arrived]
    finish = ledger.finish[first:][arrived]
    target = ledger.target[first:][arrived].astype(float)
    end = np.where(np.isnan(finish), now, finish)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(target > 1, (end - first_token) / (target - 1), 0.0)
    return int((np.nan_to_num(tpot, nan=0.0) > limit).sum())


def ok_values(values: dict[str, float]) -> bool:
    return bool(np.isfinite(values.get("e2el_p90", np.nan)))


def run_probe(spec: ProbeSpec, deployment: Deployment, rate: float,
              pools: Disaggregation | None = None) -> dict[str, Any]:
    """Simulate `rate` req/s on `deployment` (or on its prefill and decode `pools`) and judge it;
    returns one flat probe record. The request count is bounded per instance."""
    instances = deployment.replicas if pools is None else pools.prefill.replicas + pools.decode.replicas
    n = spec.num_requests(rate, instances)
    workload = WorkloadSpec(**{**spec.workload, "rate": float(rate), "num_requests": n})
    names = list(dict.fromkeys(list(REPORTED) + [s.name for s in spec.slos] + list(spec.extra_metrics)))
    record: dict[str, Any] = {"rate": float(rate), "replicas": deployment.replicas, "num_requests": n,
                              "early_stop": "", "steady": True}
    started = time.perf_counter()
    client = WatchedOpenLoop(spec.slos, spec.warmup, workload.max_concurrency) if spec.early_stop else None
    try:
        out = run_simulation(deployment, workload, seed=spec.seed, router=spec.router, fast_forward=True,
                             client=client, disaggregation=pools)
    except SLOMissed as stop:
        record.update({name: float("nan") for name in names})
        record.update(ok=False, violated=str(stop).split(" ", 1)[0], early_stop=str(stop),
                      mean_output_tokens=float("nan"), preemptions=-1, stragglers=-1, kv_peak_pct=float("nan"),
                      wall_s=time.perf_counter() - started)
        return record
    requests = out.requests
    latencies = per_request_latencies(requests[requests["request_id"] >= first_measured(len(requests), spec.warmup)])
    values: dict[str, float] = {}
    for name in names:
        metric, _, stat = name.partition("_")
        values[name] = statistic(latencies[metric], stat) if metric in latencies \
            else summary_value(out.summary, SLO(metric, stat, 1.0))  # itl: run-wide histogram only
    violated = check(values, spec.slos)
    rejected = int(requests["rejected"].sum())
    if rejected:
        violated.append(f"rejected:{rejected}")
    done = requests[requests["finish_s"].notna()]
    record.update(values)
    window = float(requests["arrival_s"].max() - requests["arrival_s"].min()) if len(requests) else 0.0
    # a window shorter than twice the E2EL never reaches steady state: the verdict is optimistic
    record["steady"] = bool(window >= 2 * values.get("e2el_p90", np.nan)) if ok_values(values) else True
    record.update(ok=not violated, violated=",".join(violated),
                  mean_output_tokens=float(done["output_tokens"].mean()) if len(done) else float("nan"),
                  preemptions=int(requests["preemptions"].sum()), stragglers=int(out.summary["stragglers"]["count"]),
                  kv_peak_pct=float(out.summary["kv"]["peak_pct"]),
                  wall_s=time.perf_counter() - started)
    return record
