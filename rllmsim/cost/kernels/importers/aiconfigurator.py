"""aiconfigurator's vLLM kernel database: `data/<system>/<op>/vllm/<version>/*.parquet`.

One measured vLLM version is taken per op: the requested one where it was measured, otherwise the
newest measured (a `reuse.yaml` without parquet only points at another version's rows). Latencies
are milliseconds in the source and microseconds in the tables.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rllmsim.cost.kernels.tables import KernelTables
from rllmsim.errors import ConfigError

#: The MoE routing distribution taken from the database: a mild power law, since real routers are
#: not perfectly balanced (aiconfigurator measures balanced, power_law_1.01 and power_law_1.2).
MOE_DISTRIBUTION = "power_law_1.01"
#: nccl_perf op_name -> the `impl` of its rows in the comm table
NCCL_IMPLS = {"all_reduce": "nccl", "all_gather": "nccl_all_gather", "reduce_scatter": "nccl_reduce_scatter",
              "alltoall": "nccl_alltoall"}


#: MoE dtypes taken from the newest vLLM version that measured them rather than the requested one:
#: from 0.24 the collector runs gpt-oss's own MXFP4 MoE method at TP 1-32 and names the kernel vLLM
#: picked (older versions measured TP 1-2 under one generic name, or not at all).
MOE_NEWEST_DTYPES = ("w4a16_mxfp4",)
#: The MXFP4 MoE kernel vLLM runs gpt-oss with, by GPU family (vLLM's `get_mxfp4_backend`): OpenAI's
#: triton_kernels on Hopper, FlashInfer's TRT-LLM kernel with bf16 activations on datacenter
#: Blackwell, Marlin elsewhere (Ada, Blackwell RTX). Substrings of aiconfigurator's kernel_source,
#: most preferred first; rows of any other kernel at a shape the preferred one measured are dropped.
MXFP4_KERNELS: dict[str, tuple[str, ...]] = {
    "hopper": ("oaitritonmxfp4", "vllm_mxfp4_moe", "marlin"),
    "blackwell": ("flashinfer_trtllm_mxfp4_bf16", "vllm_mxfp4_moe", "marlin"),
    "other": ("marlin", "xpu_moe_mxfp4", "vllm_mxfp4_moe"),
}
#: MLA dimensions (hidden, q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim,
#: v_head_dim) of the models aiconfigurator's MLA module tables were measured with (their HF configs).
MLA_MODELS: dict[str, tuple[int, ...]] = {
    "deepseek-ai/DeepSeek-V3": (7168, 1536, 512, 128, 64, 128),
    "deepseek-ai/DeepSeek-R1": (7168, 1536, 512, 128, 64, 128),
    "nvidia/DeepSeek-V3.1-NVFP4": (7168, 1536, 512, 128, 64, 128),
}
MLA_DIMS = ("hidden", "q_lora", "kv_lora", "nope_dim", "rope_dim", "v_dim")


def gpu_family(device: str) -> str:
    """"hopper", "blackwell" (datacenter) or "other", from a CUDA device name."""
    name = device.upper()
    if any(tag in name for tag in ("H100", "H200", "H20", "GH200")):
        return "hopper"
    if any(tag in name for tag in ("B200", "B300", "GB200", "GB300")):
        return "blackwell"
    return "other"


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _pick(op_dir: Path, filename: str, version: str) -> tuple[Path, str] | None:
    """The parquet of `filename` under op_dir/<version>/, preferring `version`, else the newest."""
    found = {p.parent.name: p for p in op_dir.glob(f"*/{filename}")}
    if not found:
        return None
    chosen = version if version in found else max(found, key=_version_key)
    return found[chosen], chosen


def _column(frame: pd.DataFrame, name: str, default: object) -> pd.Series | object:
    """A column the older databases lack (e.g. `window_size` before sliding-window rows)."""
    return frame[name] if name in frame.columns else default


def _ms_to_us(frame: pd.DataFrame) -> pd.Series:
    return (frame["latency"].astype("float64") * 1000.0).astype("float32")


def import_system(data_dir: Path, system: str, vllm_version: str = "0.19.0") -> KernelTables:
    """Read one system (e.g. `h100_sxm`) of an aiconfigurator `systems/data` directory."""
    root = Path(data_dir) / system
    if not root.is_dir():
        raise ConfigError(f"aiconfigurator data: no folder {root}; give the `systems/data` directory and a system name")
    tables: dict[str, pd.DataFrame] = {}
    versions: dict[str, str] = {}
    meta_extra: dict[str, object] = {}
    device = ""

    def read(op: str, sub: str, filename: str) -> pd.DataFrame | None:
        nonlocal device
        hit = _pick(root / op / sub, filename, vllm_version)
        if hit is None:
            return None
        frame = pd.read_parquet(hit[0])
        versions[filename.removesuffix(".parquet")] = hit[1]
        device = device or str(frame["device"].iloc[0])
        return frame

    gemm = read("gemm", "vllm", "gemm_perf.parquet")
    if gemm is not None:
        tables["gemm"] = pd.DataFrame({"dtype": gemm["gemm_dtype"].astype(str), "m": gemm["m"], "n": gemm["n"],
                                       "k": gemm["k"], "latency_us": _ms_to_us(gemm)})
    ctx = read("attention", "vllm", "context_attention_perf.parquet")
    if ctx is not None:
        tables["context_attention"] = pd.DataFrame({
            "batch": ctx["batch_size"], "isl": ctx["isl"], "heads": ctx["num_heads"],
            "kv_heads": ctx["num_key_value_heads"], "head_dim": ctx["head_dim"],
            "kv_dtype": ctx["kv_cache_dtype"].astype(str), "window": _column(ctx, "window_size", 0),
            "latency_us": _ms_to_us(ctx)})
    gen = read("attention", "vllm", "generation_attention_perf.parquet")
    if gen is not None:
        tables["generation_attention"] = pd.DataFrame({
            "batch": gen["batch_size"], "context": gen["isl"] + gen["step"], "heads": gen["num_heads"],
            "kv_heads": gen["num_key_value_heads"], "head_dim": gen["head_dim"],
            "kv_dtype": gen["kv_cache_dtype"].astype(str), "window": _column(gen, "window_size", 0),
            "latency_us": _ms_to_us(gen)})
    # comm tables count message_size in elements (the collector divides nccl-tests' bytes by the
    # element size, and shapes vLLM's all-reduce input as [tokens, 4096] elements); 16-bit rows only
    comm = []
    custom = read("comm", "vllm", "custom_allreduce_perf.parquet")
    if custom is not None:
        custom = custom[custom["allreduce_dtype"].isin(["bfloat16", "float16", "half"])]
        impl = custom["kernel_source"].map({"vLLM_custom_graph": "vllm_graph", "vLLM_custom_eager": "vllm_eager"})
        comm.append(pd.DataFrame({"impl": impl, "num_gpus": custom["num_gpus"], "bytes": custom["message_size"] * 2,
                                  "latency_us": _ms_to_us(custom)}))
    nccl = read("comm", "nccl", "nccl_perf.parquet")
    if nccl is not None:
        # all_gather / reduce_scatter / alltoall: the data-parallel MoE exchange (cost/data_parallel.py);
        # their message_size is the whole gathered (scattered) buffer, as nccl-tests counts it
        nccl = nccl[nccl["op_name"].isin(NCCL_IMPLS) & (nccl["nccl_dtype"] == "half")]
        comm.append(pd.DataFrame({"impl": nccl["op_name"].map(NCCL_IMPLS), "num_gpus": nccl["num_gpus"],
                                  "bytes": nccl["message_size"] * 2,
                                  "latency_us": _ms_to_us(nccl)}))
    if comm:
        tables["allreduce"] = pd.concat(comm, ignore_index=True).dropna()
    moe = read("moe", "vllm", "moe_perf.parquet")
    if moe is not None:
        moe, dtype_versions = _moe_rows(root / "moe" / "vllm", moe, versions["moe_perf"], device)
        tables["moe"] = pd.DataFrame({
            "dtype": moe["moe_dtype"].astype(str), "tokens": moe["num_tokens"], "hidden": moe["hidden_size"],
            "inter": moe["inter_size"], "topk": moe["topk"], "experts": moe["num_experts"],
            "tp": moe["moe_tp_size"], "ep": moe["moe_ep_size"], "latency_us": _ms_to_us(moe)})
        meta_extra["moe_dtype_versions"] = dtype_versions
    for phase, column in (("context", "isl"), ("generation", "step")):
        rows = read("mla", "vllm", f"mla_{phase}_module_perf.parquet")
        if rows is not None:
            mla = _mla_rows(rows, column)
            if not mla.empty:
                tables[f"mla_{phase}"] = mla
    quant = []
    for filename, kind in (("scale_matrix_perf.parquet", "quantize"), ("computescale_perf.parquet", "dynamic_scale")):
        rows = read("quantize", "vllm", filename)
        if rows is not None:
            # the scale's time is measured as a difference of two kernels: noise can make it <= 0
            rows = rows[(rows["quant_dtype"] == "fp8") & (rows["latency"] > 0)]
            quant.append(pd.DataFrame({"kind": kind, "m": rows["m"], "k": rows["k"], "latency_us": _ms_to_us(rows)}))
    if quant:
        tables["activation_quant"] = pd.concat(quant, ignore_index=True)
    if not tables:
        raise ConfigError(f"aiconfigurator data: {root} holds no vLLM gemm, attention, comm or moe tables")
    meta = {"source": "aiconfigurator", "system": system, "device": device, "vllm_versions": versions,
            "moe_distribution": MOE_DISTRIBUTION, **meta_extra}
    return KernelTables(tables=tables, meta=meta)


def _moe_rows(op_dir: Path, rows: pd.DataFrame, version: str, device: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """The fused-MoE rows to ship under one routing distribution: the chosen version's, with the
    dtypes of MOE_NEWEST_DTYPES from the newest version measuring them, one kernel per shape for
    MXFP4 (the one vLLM runs on this GPU); and the version each dtype came from."""
    rows = rows[rows["distribution"] == MOE_DISTRIBUTION]
    versions = {str(d): version for d in rows["moe_dtype"].unique()}
    found = {p.parent.name: p for p in op_dir.glob("*/moe_perf.parquet")}
    for dtype in MOE_NEWEST_DTYPES:
        for newest in sorted(found, key=_version_key, reverse=True):
            other = pd.read_parquet(found[newest])
            other = other[(other["moe_dtype"] == dtype) & (other["distribution"] == MOE_DISTRIBUTION)]
            if not other.empty:
                rows = pd.concat([rows[rows["moe_dtype"] != dtype], other], ignore_index=True)
                versions[dtype] = newest
                break
    mxfp4 = rows["moe_dtype"].astype(str).str.contains("mxfp4")
    if mxfp4.any() and "kernel_source" in rows.columns:
        rows = pd.concat([rows[~mxfp4], _one_kernel_per_shape(rows[mxfp4], MXFP4_KERNELS[gpu_family(device)])],
                         ignore_index=True)
    return rows, dict(sorted(versions.items()))


def _one_kernel_per_shape(rows: pd.DataFrame, preference: tuple[str, ...]) -> pd.DataFrame:
    """Rows of the most preferred kernel at each (dtype, expert shape); kernels the preference does
    not name rank last, so a shape only they measured keeps them."""
    def rank(kernel: str) -> int:
        return next((i for i, tag in enumerate(preference) if tag in kernel), len(preference))

    ranks = rows["kernel_source"].astype(str).map(rank)
    shape = ["moe_dtype", "hidden_size", "inter_size", "topk", "num_experts"]
    best = ranks.groupby([rows[c] for c in shape]).transform("min")
    return rows[ranks == best]


def _mla_rows(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """MLA module rows (the whole attention block of one layer: q/kv down- and up-projections,
    their norms, rotary, attention with the absorbed decode BMMs, o_proj) at bf16 prefill queries,
    vLLM's default, with the measured model's MLA dimensions; unknown models are left out."""
    rows = rows[(rows["mla_dtype"] == "bfloat16") & rows["model"].isin(list(MLA_MODELS))]
    dims = pd.DataFrame([MLA_MODELS[m] for m in rows["model"]], columns=list(MLA_DIMS), index=rows.index)
    size = "isl" if column == "isl" else "context"
    return pd.DataFrame({"dtype": rows["gemm_type"].astype(str), "kv_dtype": rows["kv_cache_dtype"].astype(str),
                         "heads": rows["num_heads"], "batch": rows["batch_size"], size: rows[column], **dims,
                         "latency_us": _ms_to_us(rows)}).reset_index(drop=True)
