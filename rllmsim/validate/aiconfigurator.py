"""Closed-loop benchmark rows measured on real GPUs (ai-dynamo/aiconfigurator's silicon CSV):
fixed input length `isl`, output length `osl`, `batch_size` concurrent users, `tp_size`, with the
measured mean TTFT and TPOT. Each row is simulated the way its benchmark client ran, on the GPU the
`system` column names, with vLLM's default engine arguments for that GPU.

The benchmark's start, modelled as such: both clients that measure these rows, `vllm bench serve
--max-concurrency C` (default `--request-rate inf`) and aiconfigurator's generated `aiperf profile
--concurrency C` (concurrency-burst mode), create every request at time 0 and release them through
a C-slot semaphore: the first C go out together and each completion sends the next one at once.
`requests_per_user` x C requests of exactly isl/osl tokens are sent (aiperf's `--num-requests`,
which aiconfigurator's benchmark command sets to 20 x C), and the means cover every one of them,
the opening wave included, as both clients report them. A warm-up (aiperf's
`--warmup-request-count`, vLLM's `--num-warmups`) drains before the measured phase starts, so
the measured phase starts from an idle engine with all C at once again: the simulation starts
there and does not simulate the warm-up.

Rows the simulator cannot represent are skipped with the reason, never approximated: models
missing from the catalog, disaggregated (prefill/decode split) serving, and 4-bit formats other than
an MXFP4 checkpoint (gpt-oss) on a GPU without FP4 tensor cores, which is what vLLM runs there
whatever the row's label.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rllmsim.cost.base import CostModel
from rllmsim.cost.select import cost_model_for as default_cost_model
from rllmsim.deployment import Deployment
from rllmsim.engine.clients import ClosedLoop
from rllmsim.errors import ConfigError
from rllmsim.simulation import RunOutput, run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.workload.table import make_request_table

NEEDED = ("model_path", "system", "mode", "isl", "osl", "batch_size", "tp_size", "silicon_ttft_ms", "silicon_tpot_ms")
# requests per user (num-requests / concurrency) of aiconfigurator's generated aiperf command
BENCH_REQUESTS_PER_USER = 20
#: What a closed-loop row is compared on (E2EL derived from the recorded means, see validate_cases).
METRICS = ("ttft", "tpot", "e2el")
QUANT = {"fp8": "fp8", "fp8_block": "fp8", "int8": "int8"}
#: Labels aiconfigurator gives gpt-oss rows, whose checkpoint is MXFP4, on GPUs without FP4 tensor
#: cores: there vLLM can only run the checkpoint's MXFP4 experts (weight-only, bf16 activations).
FP4_LABELS = ("fp4", "nvfp4", "mxfp4")
#: Systems with FP4 tensor cores, where an NVFP4 label could mean a re-quantized checkpoint.
FP4_SYSTEMS = ("b200", "b300", "gb200", "gb300", "rtx_pro_6000")


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
    moe_ep: int = 1
    attention_dp: int = 1
    pp: int = 1


def read_aiconfigurator(path: str | Path) -> list[ClosedLoopCase]:
    path = Path(path)
    try:
        # index_col=False: rows with more fields than the header must not silently shift every
        # column right (pandas would take the first field as an index); pandas warns instead
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, index_col=False)
    except pd.errors.ParserWarning:
        raise ConfigError(f"{path.name}: its rows have more fields than its header names; "
                          "write one header column per field") from None
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
            # batch_size counts per DP rank: the benchmark's concurrency is batch_size x attention_dp_size
            isl=_int(r["isl"]), osl=_int(r["osl"]), tp=_int(r["tp_size"]),
            users=_int(r["batch_size"]) * max(_int(r.get("attention_dp_size")), 1),
            ttft_ms=float(r["silicon_ttft_ms"]), tpot_ms=float(r["silicon_tpot_ms"]),
            backend_version=str(r.get("backend_version")) if isinstance(r.get("backend_version"), str) else "",
            concurrency_recorded="silicon_concurrency=" in str(r.get("silicon_data_source", "")),
            moe_ep=max(_int(r.get("moe_ep_size")), 1), attention_dp=max(_int(r.get("attention_dp_size")), 1),
            pp=max(_int(r.get("pp_size")), 1),
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
    quantization = QUANT.get(case.precision)
    if case.precision in FP4_LABELS and _runs_mxfp4_checkpoint(model.checkpoint_quantization, gpu or case.system):
        quantization = "mxfp4"
    elif case.precision not in ("bf16", "fp16") and case.precision not in QUANT:
        raise ConfigError(f"precision {case.precision} is not modelled")
    if case.moe_ep > 1 and case.moe_ep != case.tp * case.attention_dp:
        raise ConfigError(f"moe_ep_size {case.moe_ep} with tp_size {case.tp} x attention_dp_size {case.attention_dp}: "
                          "vLLM's --enable-expert-parallel shards experts over all DP x TP GPUs")
    return Deployment(model=model, gpu=load_gpu(gpu or case.system), tp=case.tp,
                      quantization=quantization, max_model_len=case.isl + case.osl,
                      enable_expert_parallel=case.moe_ep > 1, data_parallel_size=case.attention_dp,
                      pipeline_parallel_size=case.pp,
                      **({"vllm_version": case.backend_version} if case.backend_version else {}))


def _runs_mxfp4_checkpoint(checkpoint_quantization: str | None, system: str) -> bool:
    return checkpoint_quantization == "mxfp4" and not system.lower().replace("-", "_").startswith(FP4_SYSTEMS)


def benchmark_run(case: ClosedLoopCase, deployment: Deployment, cost_model: CostModel | None = None,
                  requests_per_user: int = BENCH_REQUESTS_PER_USER, seed: int = 0) -> RunOutput:
    """The row's benchmark, simulated: `requests_per_user` x `users` requests of isl/osl tokens, all
    created at time 0 and sent through a `users`-slot semaphore (ClosedLoop: each slot sends the
    next request the instant its last one completes), from an idle engine."""
    n = case.users * requests_per_user
    table = make_request_table(np.zeros(n), np.full(n, case.isl), np.full(n, case.osl), "closed-loop")
    cost_model = cost_model or default_cost_model(deployment)
    return run_simulation(deployment, table, seed=seed, cost_model=cost_model, client=ClosedLoop(case.users))


def simulate_case(case: ClosedLoopCase, deployment: Deployment, cost_model: CostModel | None = None,
                  requests_per_user: int = BENCH_REQUESTS_PER_USER, seed: int = 0) -> dict[str, Any]:
    """Mean TTFT and TPOT over every request of the row's simulated benchmark (as the benchmark
    averages them), and, to show the start's share, the mean TTFT of the opening wave (the first
    `users` requests, sent together at time 0) and of the rest."""
    run = benchmark_run(case, deployment, cost_model, requests_per_user, seed)
    req = run.requests
    req = req[req["finish_s"].notna()]
    ttft = req["ttft_s"].to_numpy(np.float64)
    first = (req["request_id"] < case.users).to_numpy()
    out = req["output_tokens"].to_numpy(np.float64)
    tpot = (req["e2el_s"] - req["ttft_s"]).to_numpy() / np.maximum(out - 1, 1)
    s = run.summary
    return {"sim_requests": int(len(run.requests)), "sim_ttft_ms": 1e3 * float(ttft.mean()),
            "sim_ttft_first_wave_ms": 1e3 * float(ttft[first].mean()) if first.any() else float("nan"),
            "sim_ttft_rest_ms": 1e3 * float(ttft[~first].mean()) if (~first).any() else float("nan"),
            "sim_tpot_ms": 1e3 * float(tpot[out > 1].mean()) if (out > 1).any() else float("nan"),
            "sim_e2el_ms": 1e3 * float(req["e2el_s"].mean()),
            "sim_kv_peak_pct": s["kv"]["peak_pct"], "sim_preemptions": s["preemptions"],
            "kv_capacity_tokens": deployment.num_gpu_blocks * deployment.block_size}


def validate_cases(cases: list[ClosedLoopCase], cost_model_for=None, gpu: str | None = None,
                   requests_per_user: int = BENCH_REQUESTS_PER_USER, seed: int = 0, progress=None) -> pd.DataFrame:
    """One row per case: real and simulated TTFT, TPOT and E2EL and signed % errors, or the skip
    reason. Rows whose batch_size is not a recorded concurrency are simulated but `excluded` from MAPE.

    The rows record no E2EL, but their means fix it: every request has exactly `osl` output tokens
    and both clients average TPOT = (E2EL - TTFT)/(osl - 1) per request, so the mean E2EL is
    mean TTFT + (osl - 1) x mean TPOT. It is the closed loop's cycle per user, which sets its
    throughput; TTFT is a few per cent of it, so how the cycle splits into TTFT and TPOT (the
    phase of the users, docs/validation.md) moves TTFT far more than E2EL.

    `cost_model_for(deployment)` returns the cost model of a deployment (the default choice when
    not given).
    """
    rows = []
    for case in cases:
        row: dict[str, Any] = {"row": case.row, "model": case.model, "mode": case.mode, "precision": case.precision,
                               "isl": case.isl, "osl": case.osl, "users": case.users, "tp": case.tp,
                               "real_ttft_ms": case.ttft_ms, "real_tpot_ms": case.tpot_ms,
                               "real_e2el_ms": case.ttft_ms + max(case.osl - 1, 0) * case.tpot_ms, "skipped": "",
                               "excluded": "" if case.concurrency_recorded else
                               "batch_size is not a recorded concurrency (no silicon_concurrency in the source)"}
        try:
            deployment = case_deployment(case, gpu)
            cost_model = cost_model_for(deployment) if cost_model_for else None
            row.update(simulate_case(case, deployment, cost_model, requests_per_user, seed))
        except ConfigError as err:
            row["skipped"] = str(err).split(";")[0]
        rows.append(row)
        if progress is not None:
            progress(case)
    out = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["row", "model", "real_ttft_ms", "real_tpot_ms",
                                                               "skipped", "excluded"])
    for metric in METRICS:
        if f"sim_{metric}_ms" not in out:
            out[f"sim_{metric}_ms"] = np.nan
        out[f"{metric}_error_pct"] = 100.0 * (out[f"sim_{metric}_ms"] - out[f"real_{metric}_ms"]) / out[f"real_{metric}_ms"]
    return out


def require_simulated(results: pd.DataFrame, source: str) -> None:
    """ConfigError (one line: which CSV rows, and why) when no row of the file could be simulated."""
    if len(results) and (results["skipped"] == "").any():
        return
    if not len(results):
        raise ConfigError(f"{source}: no rows to validate")
    reasons = results.groupby("skipped", sort=False)["row"].apply(list)
    parts = [f"{_rows_text(rows)}: {reason}" for reason, rows in reasons.items()]
    raise ConfigError(f"{source}: none of its {len(results)} rows can be simulated ({'; '.join(parts)})")


def _rows_text(rows: list[int]) -> str:
    """CSV row numbers, consecutive runs joined: 'rows 2-4, 7' or 'row 5'."""
    rows = sorted(rows)
    runs: list[list[int]] = []
    for r in rows:
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    text = ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)
    return f"{'row' if len(rows) == 1 else 'rows'} {text}"


def mape_by_model(results: pd.DataFrame) -> pd.DataFrame:
    """Per model (and overall): cases simulated and skipped, TTFT, TPOT and E2EL MAPE, median
    absolute and mean signed % error."""
    groups = [(m, g) for m, g in results.groupby("model", sort=True)] + [("all", results)]
    return pd.DataFrame([_mape_row(model, g) for model, g in groups])


def _mape_row(model: str, g: pd.DataFrame) -> dict[str, Any]:
    done = g[(g["skipped"] == "") & (g["excluded"] == "")]
    row: dict[str, Any] = {"model": model, "cases": int(len(done)), "skipped": int(len(g) - len(done))}
    for metric in METRICS:
        err = done[f"{metric}_error_pct"].to_numpy(np.float64)
        err = err[np.isfinite(err)]
        row[f"{metric}_mape_pct"] = float(np.abs(err).mean()) if len(err) else float("nan")
        row[f"{metric}_median_ape_pct"] = float(np.median(np.abs(err))) if len(err) else float("nan")
        row[f"{metric}_mean_signed_pct"] = float(err.mean()) if len(err) else float("nan")
    row["skip_reason"] = "; ".join(sorted(set(g.loc[g["skipped"] != "", "skipped"])
                                          | set(g.loc[g["excluded"] != "", "excluded"])))
    return row
