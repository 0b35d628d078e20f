"""Closed-loop benchmark rows measured on real GPUs (ai-dynamo/aiconfigurator's silicon CSV):
fixed input length `isl`, output length `osl`, `batch_size` concurrent users, `tp_size`, with the
measured mean TTFT and TPOT. Each row becomes a closed-loop simulation: `batch_size` users, each
sending `requests_per_user` requests of exactly isl/osl tokens back to back, on the GPU the
`system` column names, with vLLM's default engine arguments for that GPU.

Rows the simulator cannot represent are skipped with the reason, never approximated: models
missing from the catalog, disaggregated (prefill/decode split) serving, and 4-bit formats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np
import pandas as pd
import simpy

from rllmsim.cost.base import CostModel
from rllmsim.cost.select import cost_model_for as default_cost_model
from rllmsim.deployment import Deployment
from rllmsim.engine.clients import ClosedLoop
from rllmsim.errors import ConfigError
from rllmsim.simulation import run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.workload.table import make_request_table

NEEDED = ("model_path", "system", "mode", "isl", "osl", "batch_size", "tp_size", "silicon_ttft_ms", "silicon_tpot_ms")
START_MODES = ("lockstep", "staggered")
QUANT = {"fp8": "fp8", "fp8_block": "fp8", "int8": "int8"}


def is_aiconfigurator(path: Path) -> bool:
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    return "silicon_ttft_ms" in header and "batch_size" in header


@dataclass(frozen=True)
class ClosedLoopCase:
    """One measured closed-loop benchmark."""

    row: int
    model: str
    system: str
    mode: str
    precision: str
    isl: int
    osl: int
    users: int
    tp: int
    ttft_ms: float
    tpot_ms: float
    backend_version: str
    concurrency_recorded: bool = True


def read_aiconfigurator(path: str | Path) -> list[ClosedLoopCase]:
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, ValueError) as exc:
        raise ConfigError(f"{path.name}: not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in NEEDED if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path.name}: not an aiconfigurator silicon CSV (missing {', '.join(missing)})")
    cases = []
    for i, r in frame.iterrows():
        precision = r.get("gemm_quant_mode") if isinstance(r.get("gemm_quant_mode"), str) else r.get("precision")
        cases.append(ClosedLoopCase(
            row=int(i) + 2, model=str(r["model_path"]), system=str(r["system"]), mode=str(r["mode"]),
            precision=str(precision).lower() if isinstance(precision, str) else "bf16",
            isl=_int(r["isl"]), osl=_int(r["osl"]), users=_int(r["batch_size"]), tp=_int(r["tp_size"]),
            ttft_ms=float(r["silicon_ttft_ms"]), tpot_ms=float(r["silicon_tpot_ms"]),
            backend_version=str(r.get("backend_version")) if isinstance(r.get("backend_version"), str) else "",
            concurrency_recorded="silicon_concurrency=" in str(r.get("silicon_data_source", "")),
        ))
    return cases


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float, np.number)) and math.isfinite(value) else 0


def case_deployment(case: ClosedLoopCase, gpu: str | None = None) -> Deployment:
    """The deployment a row describes; ConfigError (the skip reason) when it cannot be simulated."""
    model = load_model(case.model)
    if case.mode != "agg":
        raise ConfigError(f"mode {case.mode}: disaggregated prefill/decode serving is not modelled")
    if case.users < 1 or case.tp < 1:
        raise ConfigError("no batch_size or tp_size")
    if case.precision not in ("bf16", "fp16") and case.precision not in QUANT:
        raise ConfigError(f"precision {case.precision} is not modelled")
    return Deployment(model=model, gpu=load_gpu(gpu or case.system), tp=case.tp,
                      quantization=QUANT.get(case.precision), max_model_len=case.isl + case.osl,
                      **({"vllm_version": case.backend_version} if case.backend_version else {}))


@dataclass(frozen=True)
class StaggeredClosedLoop:
    """Closed-loop users whose first requests go out at the given offsets (seconds) instead of all
    at once; afterwards each sends its next request when its last one completes."""

    offsets: tuple[float, ...]
    name: str = "closed-loop-staggered"

    def drive(self, cluster) -> Generator:
        env = cluster.env
        next_rid = iter(range(cluster.ledger.size))

        def user(offset: float):
            if offset > 0:
                yield env.timeout(offset)
            for rid in next_rid:
                cluster.ledger.arrival[rid] = env.now
                yield cluster.submit(rid, notify=True)

        yield simpy.AllOf(env, [env.process(user(o)) for o in self.offsets])


def simulate_case(case: ClosedLoopCase, deployment: Deployment, cost_model: CostModel | None = None,
                  requests_per_user: int = 4, seed: int = 0, start: str = "lockstep") -> dict[str, Any]:
    """Mean TTFT and TPOT of `users` closed-loop users sending isl/osl requests.

    start="lockstep": every user sends its first request at time 0 (what a benchmark client does;
    with equal lengths the users then stay in step). start="staggered": the users' first requests
    are spread evenly over one request's simulated lockstep latency, the desynchronised steady
    state a long real benchmark drifts into; the first request of each user (the ramp) is then left
    out of the means.
    """
    if start not in START_MODES:
        raise ConfigError(f"closed-loop start {start!r}: choose one of {', '.join(START_MODES)}")
    n = case.users * requests_per_user
    table = make_request_table(np.zeros(n), np.full(n, case.isl), np.full(n, case.osl), "closed-loop")
    cost_model = cost_model or default_cost_model(deployment)
    run = run_simulation(deployment, table, seed=seed, cost_model=cost_model, client=ClosedLoop(case.users))
    if start == "staggered":
        cycle = float(run.requests["e2el_s"].mean())
        offsets = tuple(cycle * k / case.users for k in range(case.users))
        run = run_simulation(deployment, table, seed=seed, cost_model=cost_model,
                             client=StaggeredClosedLoop(offsets))
    req = run.requests
    steady = req[req["request_id"] >= (case.users if start == "staggered" and requests_per_user > 1 else 0)]
    steady = steady[steady["finish_s"].notna()]
    out = steady["output_tokens"].to_numpy(np.float64)
    tpot = (steady["e2el_s"] - steady["ttft_s"]).to_numpy() / np.maximum(out - 1, 1)
    s = run.summary
    return {"sim_ttft_ms": 1e3 * float(steady["ttft_s"].mean()), "sim_tpot_ms": 1e3 * float(tpot[out > 1].mean()),
            "sim_kv_peak_pct": s["kv"]["peak_pct"], "sim_preemptions": s["preemptions"],
            "kv_capacity_tokens": deployment.num_gpu_blocks * deployment.block_size}


def validate_cases(cases: list[ClosedLoopCase], cost_model_for=None, gpu: str | None = None,
                   requests_per_user: int = 4, seed: int = 0, starts: tuple[str, ...] = START_MODES,
                   progress=None) -> pd.DataFrame:
    """One row per case and start mode: real and simulated TTFT/TPOT and signed % errors, or the
    skip reason. Rows whose batch_size is not a recorded concurrency are simulated but `excluded`
    from MAPE.

    `cost_model_for(deployment)` returns the cost model of a deployment (roofline by default).
    """
    rows = []
    for case in cases:
        base: dict[str, Any] = {"row": case.row, "model": case.model, "mode": case.mode, "precision": case.precision,
                                "isl": case.isl, "osl": case.osl, "users": case.users, "tp": case.tp,
                                "real_ttft_ms": case.ttft_ms, "real_tpot_ms": case.tpot_ms, "skipped": "",
                                "excluded": "" if case.concurrency_recorded else
                                "batch_size is not a recorded concurrency (no silicon_concurrency in the source)"}
        try:
            deployment = case_deployment(case, gpu)
            cost_model = cost_model_for(deployment) if cost_model_for else None
        except ConfigError as err:
            rows += [{**base, "start": start, "skipped": str(err).split(";")[0]} for start in starts]
            continue
        for start in starts:
            row = {**base, "start": start}
            try:
                row.update(simulate_case(case, deployment, cost_model, requests_per_user, seed, start))
            except ConfigError as err:
                row["skipped"] = str(err).split(";")[0]
            rows.append(row)
        if progress is not None:
            progress(case)
    out = pd.DataFrame(rows)
    for metric in ("ttft", "tpot"):
        if f"sim_{metric}_ms" not in out:
            out[f"sim_{metric}_ms"] = np.nan
        out[f"{metric}_error_pct"] = 100.0 * (out[f"sim_{metric}_ms"] - out[f"real_{metric}_ms"]) / out[f"real_{metric}_ms"]
    return out


def mape_by_model(results: pd.DataFrame) -> pd.DataFrame:
    """Per model (and overall): cases simulated and skipped, TTFT and TPOT MAPE, median absolute
    and mean signed % error."""
    rows = []
    for start, by_start in results.groupby("start", sort=False):
        groups = [(m, g) for m, g in by_start.groupby("model", sort=True)] + [("all", by_start)]
        rows += [_mape_row(start, model, g) for model, g in groups]
    return pd.DataFrame(rows)


def _mape_row(start: str, model: str, g: pd.DataFrame) -> dict[str, Any]:
    done = g[(g["skipped"] == "") & (g["excluded"] == "")]
    row: dict[str, Any] = {"start": start, "model": model, "cases": int(len(done)), "skipped": int(len(g) - len(done))}
    for metric in ("ttft", "tpot"):
        err = done[f"{metric}_error_pct"].to_numpy(np.float64)
        err = err[np.isfinite(err)]
        row[f"{metric}_mape_pct"] = float(np.abs(err).mean()) if len(err) else float("nan")
        row[f"{metric}_median_ape_pct"] = float(np.median(np.abs(err))) if len(err) else float("nan")
        row[f"{metric}_mean_signed_pct"] = float(err.mean()) if len(err) else float("nan")
    row["skip_reason"] = "; ".join(sorted(set(g.loc[g["skipped"] != "", "skipped"])
                                          | set(g.loc[g["excluded"] != "", "excluded"])))
    return row


def ttft_bracket(results: pd.DataFrame) -> dict[str, Any] | None:
    """How many measured TTFTs fall between the staggered (lower) and lockstep (upper) simulated
    bounds: the share the engine model explains whatever phase the real client's users were in."""
    if not set(START_MODES) <= set(results["start"]):
        return None
    ok = (results["skipped"] == "") & (results["excluded"] == "")
    wide = results[ok].pivot_table(index="row", columns="start", values=["sim_ttft_ms", "real_ttft_ms"])
    real = wide[("real_ttft_ms", "lockstep")]
    low, high = wide[("sim_ttft_ms", "staggered")], wide[("sim_ttft_ms", "lockstep")]
    lo, hi = np.minimum(low, high), np.maximum(low, high)
    inside = (real >= lo) & (real <= hi)
    return {"cases": int(len(wide)), "inside": int(inside.sum()),
            "outside_rows": [int(r) for r in wide.index[~inside]]}
