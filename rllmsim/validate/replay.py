"""Replay a recorded run through the simulator and measure the distance.

The simulator gets the run's exact requests (arrival, prompt and output lengths) and engine
arguments; the deployment's GPU comes from `--gpu`, the run's own record, or the run's name; the
KV capacity is the one the real engine reported when the record has it, else the calibration's
(measured on the same machine), else derived from memory, and the result says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rllmsim.cost.base import CostModel
from rllmsim.cost.select import cost_model_for
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.simulation import RunOutput, run_simulation
from rllmsim.specs import GPUSpec, load_gpu, load_model, uncatalogued_gpu
from rllmsim.validate import compare
from rllmsim.validate.recorded import EngineArgs, RecordedRun, real_latencies
from rllmsim.validate.timeline import reconstruct_kv_blocks, sample_sim_timeline
from rllmsim.workload.table import make_request_table

SIXTEEN_BIT = ("auto", "bfloat16", "bf16", "float16", "fp16", "half")


@dataclass
class Validation:
    """A replay and its comparison with the real run."""

    run: RecordedRun
    deployment: Deployment
    cost_model: CostModel
    sim: RunOutput
    errors: pd.DataFrame
    requests: pd.DataFrame
    ticks: pd.DataFrame | None
    kv_basis: str | None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        headline = {}
        for _, r in self.errors.iterrows():
            if r["stat"] in ("p50", "p90", "mean", "peak", "total", "median") and np.isfinite(r["signed_error"]):
                headline[f"{r['metric']}_{r['stat']}_{'pp' if r['error_unit'] == 'pp' else 'pct'}"] = r["signed_error"]
        sim_summary = {k: v for k, v in self.sim.summary.items() if k != "config"}
        return {
            "run": {"name": self.run.name, "source": self.run.source, "path": str(self.run.path),
                    "requests": int(len(self.run.requests)), "duration_s": self.run.duration_s,
                    "engine_args": self.run.engine.to_dict()},
            "deployment": self.deployment.to_dict(),
            "cost_model": self.cost_model.provenance(),
            "kv_basis": self.kv_basis,
            "signed_errors": headline,
            "errors": self.errors.to_dict(orient="records"),
            "notes": self.run.notes + self.notes,
            "sim_summary": sim_summary,
        }


def resolve_gpu(gpu: str | None, run: RecordedRun, cost_model_device: str | None = None) -> GPUSpec:
    """--gpu, else the run's recorded device, else the first word of the run's name
    ("RTXPRO6000_Llama-3.1-8B"), else the device the cost model was calibrated on."""
    if gpu:
        return load_gpu(gpu)
    tried = []
    for candidate in (run.engine.device, run.name.split("_")[0], cost_model_device):
        if not candidate:
            continue
        try:
            return load_gpu(candidate)
        except ConfigError:
            tried.append(candidate)
    if cost_model_device is not None:
        return uncatalogued_gpu(cost_model_device)
    raise ConfigError(f"which GPU ran {run.name}? none of {tried or 'its records'} is a catalog GPU; give --gpu")


def build_deployment(engine: EngineArgs, gpu: GPUSpec, model: str | None = None,
                     measured_blocks: int | None = None, notes: list[str] | None = None) -> Deployment:
    """The Deployment a run's engine arguments describe. `measured_blocks` (a KV capacity measured
    on the same machine, e.g. by the profiler) is used when the run itself reported none."""
    notes = notes if notes is not None else []
    name = model or engine.model
    if not name:
        raise ConfigError("the run does not say which model it served; give --model")
    if engine.dtype.lower() not in SIXTEEN_BIT:
        notes.append(f"dtype {engine.dtype}: the simulator sizes unquantized weights as 16-bit")
    if engine.enable_prefix_caching:
        notes.append("the real run had prefix caching on; its requests carry no prefix ids, so the replay "
                     "sees only the hits of preempted requests on their own blocks")
    blocks = engine.num_gpu_blocks or measured_blocks
    # vLLM reports num_gpu_blocks including one null block it never allocates (and its KV usage %
    # divides by num_gpu_blocks - 1); the simulated pool gets the usable ones.
    blocks = max(int(blocks) - 1, 1) if blocks else None
    if gpu.vendor == "uncatalogued" and blocks is None:
        raise ConfigError(f"{gpu.display_name} is not in the GPU catalog, so its KV capacity must be measured: "
                          "record num_gpu_blocks with the run, or calibrate on the same machine")
    knobs = {k: v for k, v in {
        "tp": engine.tp, "replicas": engine.replicas, "data_parallel_size": engine.data_parallel_size,
        "pipeline_parallel_size": engine.pipeline_parallel_size,
        "enable_expert_parallel": engine.enable_expert_parallel, "quantization": engine.quantization,
        "kv_cache_dtype": engine.kv_cache_dtype, "max_num_seqs": engine.max_num_seqs,
        "max_num_batched_tokens": engine.max_num_batched_tokens, "max_model_len": engine.max_model_len,
        "gpu_memory_utilization": engine.gpu_memory_utilization, "block_size": engine.block_size,
        "enable_chunked_prefill": engine.enable_chunked_prefill, "num_gpu_blocks_override": blocks,
        "enable_prefix_caching": engine.enable_prefix_caching, "vllm_version": engine.vllm_version,
    }.items() if v is not None}
    if engine.num_gpu_blocks:
        notes.append(f"KV capacity: {engine.num_gpu_blocks} blocks as the real engine reported, {blocks} usable "
                     "(vLLM keeps one null block)")
    elif measured_blocks:
        notes.append(f"KV capacity: {measured_blocks} blocks as the calibration's profile measured, {blocks} usable "
                     "(vLLM keeps one null block)")
    else:
        notes.append("KV capacity derived from memory (the run did not record it)")
    return Deployment(model=load_model(name), gpu=gpu, **knobs)


def validate(run: RecordedRun, deployment: Deployment, cost_model: CostModel | None = None,
             seed: int = 0, notes: list[str] | None = None) -> Validation:
    """Simulate the run's requests on `deployment` and build the error tables."""
    notes = list(notes or [])
    cost_model = cost_model or cost_model_for(deployment)
    real = run.requests
    table = make_request_table(real["arrival_s"].to_numpy(), real["prompt_tokens"].to_numpy(),
                               real["output_tokens"].to_numpy(), run.name, source=run.name)
    sim = run_simulation(deployment, table, seed=seed, cost_model=cost_model)
    sreq = sim.requests
    if sim.summary["requests"]["rejected"] or sim.summary["requests"]["truncated_to_max_model_len"]:
        notes.append(f"the simulator rejected {sim.summary['requests']['rejected']} and truncated "
                     f"{sim.summary['requests']['truncated_to_max_model_len']} requests at max_model_len "
                     f"{deployment.max_model_len}")
    sim_frame = pd.DataFrame({
        "arrival_s": sreq["arrival_s"], "prompt_tokens": sreq["prompt_tokens"], "output_tokens": sreq["output_tokens"],
        "first_token_s": sreq["first_token_s"], "finish_s": sreq["finish_s"],
        "scheduled_s": sreq["first_scheduled_s"], "preemptions": sreq["preemptions"],
    })
    real_lat, sim_lat = real_latencies(real), real_latencies(sim_frame)
    real_stats = {k: compare.stats(v) for k, v in real_lat.items()}
    real_stats["itl"] = compare.stats(run.itl_s)
    sim_stats = {k: compare.stats(v) for k, v in sim_lat.items()}
    itl = sim.summary["itl_s"]
    sim_stats["itl"] = {k: float(itl[k]) for k in compare.STATS} if np.isfinite(itl["mean"]) else None
    done = sim_frame["finish_s"].notna().to_numpy()
    real_tp = compare.throughputs(real["finish_s"].to_numpy(), real["arrival_s"].to_numpy(),
                                  real["output_tokens"].to_numpy())
    sim_tp = compare.throughputs(sim_frame["finish_s"].to_numpy()[done], sim_frame["arrival_s"].to_numpy(),
                                 sim_frame["output_tokens"].to_numpy()[done])
    ticks, kv_basis = _ticks(run, sim, deployment, sim_frame)
    rows = compare.latency_rows(real_stats, sim_stats) + compare.throughput_rows(real_tp, sim_tp)
    if ticks is not None:
        real_ticks = pd.DataFrame({"kv_pct": ticks["real_kv_pct"], "running": ticks.get("real_running"),
                                   "waiting": ticks.get("real_waiting")})
        sim_ticks = pd.DataFrame({"kv_pct": ticks["sim_kv_pct"], "running": ticks["sim_running"],
                                  "waiting": ticks["sim_waiting"]})
        rows += compare.timeline_rows(real_ticks, sim_ticks, kv_basis)
    rows += compare.per_request_rows(real_lat, sim_lat)
    per_request = _per_request(real, real_lat, sim_frame, sim_lat)
    return Validation(run, deployment, cost_model, sim, compare.error_frame(rows), per_request, ticks, kv_basis, notes)


def _per_request(real: pd.DataFrame, real_lat: dict, sim: pd.DataFrame, sim_lat: dict) -> pd.DataFrame:
    out = pd.DataFrame({
        "request_id": real["request_id"] if "request_id" in real else np.arange(len(real)).astype(str),
        "arrival_s": real["arrival_s"], "prompt_tokens": real["prompt_tokens"], "output_tokens": real["output_tokens"],
        "real_ttft_s": real_lat["ttft"], "sim_ttft_s": sim_lat["ttft"],
        "real_e2el_s": real_lat["e2el"], "sim_e2el_s": sim_lat["e2el"],
    })
    with np.errstate(divide="ignore", invalid="ignore"):
        n = out["output_tokens"].to_numpy(np.float64)
        for side in ("real", "sim"):
            out[f"{side}_tpot_s"] = np.where(n > 1, (out[f"{side}_e2el_s"] - out[f"{side}_ttft_s"]) / (n - 1), np.nan)
    out["sim_preemptions"] = sim["preemptions"].to_numpy()
    return out


def _ticks(run: RecordedRun, sim: RunOutput, deployment: Deployment, sim_frame: pd.DataFrame):
    """Real and simulated running, waiting and KV usage at the real log's ticks (or each second).

    KV basis: `recorded` when the real engine logged its KV usage (compared with the simulated
    block pool); otherwise `reconstructed`, where both sides are rebuilt the same way from their
    request timestamps and expressed as % of the simulated capacity.
    """
    capacity = deployment.num_gpu_blocks * deployment.engine_cores
    log = run.timeseries
    end = max(run.duration_s, float(np.nanmax(sim_frame["finish_s"]))) if len(sim_frame) else run.duration_s
    if log is not None:
        log = log[(log["t_s"] >= 0) & (log["t_s"] <= end + 1.0)]
        times = log["t_s"].to_numpy(np.float64)
    else:
        times = np.arange(0.5, end + 0.5, 0.5)
    if len(times) == 0:
        return None, None
    sampled = sample_sim_timeline(sim.result.timeline, times, deployment.num_gpu_blocks, deployment.engine_cores)
    ticks = pd.DataFrame({"t_s": times, "sim_running": sampled["running"], "sim_waiting": sampled["waiting"],
                          "sim_kv_blocks": sampled["kv_blocks"]})
    if log is not None:
        ticks["real_running"] = log["running"].to_numpy()
        ticks["real_waiting"] = log["waiting"].to_numpy()
        for col in ("prompt_tps", "gen_tps"):
            ticks[f"real_{col}"] = log[col].to_numpy()
    if run.kv_recorded:
        ticks["real_kv_pct"] = log["kv_cache_pct"].to_numpy()
        ticks["sim_kv_pct"] = sampled["kv_pct"]
        basis = "recorded"
    else:
        use_sched = "scheduled_s" in run.requests
        real_blocks = reconstruct_kv_blocks(run.requests, times, deployment.block_size)
        sim_req = sim_frame if use_sched else sim_frame.drop(columns="scheduled_s")
        sim_blocks = reconstruct_kv_blocks(sim_req[sim_req["finish_s"].notna()], times, deployment.block_size)
        ticks["real_kv_pct"] = 100.0 * real_blocks / capacity
        ticks["sim_kv_pct"] = 100.0 * sim_blocks / capacity
        basis = "reconstructed"
    return ticks, basis


def with_measured_capacity(engine: EngineArgs, cost_model: CostModel) -> int | None:
    """The KV blocks a calibration's profile measured, when its block size matches the run's."""
    prov = cost_model.provenance()
    blocks, block_size = prov.get("num_gpu_blocks"), prov.get("block_size")
    if not blocks:
        return None
    if engine.block_size and block_size and int(engine.block_size) != int(block_size):
        return None
    return int(blocks)


def engine_with_block_size(engine: EngineArgs, cost_model: CostModel) -> EngineArgs:
    """A run that did not record its block size used the engine default, which the calibration's
    profile (same engine, same machine) did record."""
    size = cost_model.provenance().get("block_size")
    return replace(engine, block_size=int(size)) if engine.block_size is None and size else engine


def open_run(path: str | Path, engine_args: str | Path | None = None) -> RecordedRun:
    """Read a recorded run: an LLMServingSim folder or a vllm bench result JSON."""
    from rllmsim.validate.llmservingsim import is_llmservingsim, read_llmservingsim
    from rllmsim.validate.vllm_bench import is_vllm_bench, read_vllm_bench

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recorded run not found: {path}")
    if is_llmservingsim(path):
        return read_llmservingsim(path)
    if is_vllm_bench(path):
        return read_vllm_bench(path, engine_args)
    raise ConfigError(f"{path}: not a recorded run; expected an LLMServingSim folder (requests.jsonl, "
                      "timeseries.csv, meta.json), a vllm bench --save-detailed result JSON, or an "
                      "aiconfigurator silicon CSV")
