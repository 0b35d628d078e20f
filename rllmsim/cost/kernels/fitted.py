"""The fitted roofline: kernel tables for a GPU nobody measured, from efficiency curves fitted
across the GPUs that were measured and the GPU's own datasheet peaks.

Every measured kernel time t on a GPU is split as t = floor + roofline / efficiency, where the
roofline is the kernel's time at the datasheet peak that bounds it and the floor the table's
shortest time (launch and synchronisation, roughly the same on every GPU):

- GEMM (bf16, fp8): roofline max(2mnk / tensor peak, bytes / HBM bandwidth), efficiency against
  (m, n, k); bytes = dtype bytes x (mk + nk) + 2 x mn (bf16 output);
- decode attention: KV bytes read / HBM bandwidth, against (batch, context) per (KV dtype,
  KV heads, head_dim), pooled over query heads (they do not move it);
- prefill attention (one sequence): causal FLOPs 4 x heads x head_dim x isl(isl+1)/2 / bf16
  peak, against isl per (KV dtype, heads, head_dim), pooled over KV heads;
- all-reduce: bytes / link bandwidth (`interconnect_gbps`), against message size per (impl,
  GPUs), fitted apart on NVLink-class and on PCIe GPUs;
- fp8 activation quantization: its bytes / HBM bandwidth, against (m, k).

`fit` takes the median across GPUs (in log space) of each efficiency and floor at every grid
point; `scripts/build_kernel_tables.py` writes it to `rllmsim/data/kernels/fitted_efficiency.json`
with the GPUs and vLLM versions it came from. `synthesize` turns it back into a `KernelTables` of
the canonical schema for any catalog GPU (time = floor + its roofline / efficiency), which the
ordinary kernel model (`model.py`) then times. No MoE table is synthesised: MoE layers take the
model's fallback (a GEMM per touched expert).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from rllmsim.cost.kernels.tables import KernelTables, _data_root
from rllmsim.errors import ConfigError
from rllmsim.specs import GPUSpec, load_gpu

FILENAME = "fitted_efficiency.json"
#: The GPUs the curves are fitted on: NVIDIA GPUs with aiconfigurator kernel databases (the Intel
#: Arc Pro B60 runs another software stack, the RTX 4090 has layer profiles only).
FIT_GPUS = ("a100-80gb", "h100-sxm", "h200", "b200", "b300", "gb200", "gb300", "l40s", "rtx-pro-6000")
#: Architecture of each: the median is taken within an architecture first, then across them, so
#: the four Blackwell datacenter GPUs count as one vote, not four.
FAMILIES = {"a100-80gb": "ampere", "h100-sxm": "hopper", "h200": "hopper", "b200": "blackwell", "b300": "blackwell",
            "gb200": "blackwell", "gb300": "blackwell", "l40s": "ada", "rtx-pro-6000": "blackwell-rtx"}
#: PCIe all-reduce times do not follow the link generation in the measurements (the gen4 L40S
#: all-reduces faster than the gen5 RTX PRO 6000: the host's PCIe topology decides), so PCIe
#: curves are kept in absolute time, against this reference link rather than the GPU's own.
PCIE_REFERENCE_GBPS = 32.0
GEMM_DTYPES = ("bfloat16", "fp8")
#: The token counts the GEMM curves keep (the databases measure up to 74, most of them the two
#: sides of tile boundaries): powers of two and the CUDA-graph sizes between, enough for the
#: curves' shape at a quarter of the size.
GEMM_M = (1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512, 768, 1024, 1536, 2048,
          3072, 4096, 8192, 16384, 32768)
#: bounds on a stored efficiency: at the floor itself t - floor is ~0 (efficiency unbounded)
EFFICIENCY_RANGE = (1e-4, 100.0)
DIGITS = 3  # significant digits stored: the spread across GPUs is tens of percent

Roofline = Callable[[pd.DataFrame, GPUSpec], np.ndarray]


# -- rooflines (microseconds at the datasheet peaks) -----------------------------------------------
def _gemm_roofline(rows: pd.DataFrame, gpu: GPUSpec) -> np.ndarray:
    m, n, k = (rows[c].to_numpy(dtype=np.float64) for c in ("m", "n", "k"))
    fp8 = (rows["dtype"] == "fp8").to_numpy()
    peak = np.where(fp8, gpu.fp8_tflops, gpu.bf16_tflops) * 1e6  # flops per us
    elem = np.where(fp8, 1.0, 2.0)
    moved = elem * (m * k + n * k) + 2.0 * m * n
    return np.maximum(2.0 * m * n * k / peak, moved / (gpu.hbm_bandwidth_gbps * 1e3))


def _kv_bytes(rows: pd.DataFrame) -> np.ndarray:
    return np.where(rows["kv_dtype"].to_numpy() == "fp8", 1.0, 2.0)


def _decode_roofline(rows: pd.DataFrame, gpu: GPUSpec) -> np.ndarray:
    kv = rows["batch"].to_numpy(np.float64) * rows["context"] * rows["kv_heads"] * rows["head_dim"] * 2
    return np.asarray(kv, dtype=np.float64) * _kv_bytes(rows) / (gpu.hbm_bandwidth_gbps * 1e3)


def _prefill_roofline(rows: pd.DataFrame, gpu: GPUSpec) -> np.ndarray:
    isl = rows["isl"].to_numpy(np.float64)
    flops = 4.0 * rows["batch"].to_numpy(np.float64) * rows["heads"] * rows["head_dim"] * isl * (isl + 1) / 2
    return np.asarray(flops, dtype=np.float64) / (gpu.bf16_tflops * 1e6)


def _allreduce_roofline(rows: pd.DataFrame, gpu: GPUSpec) -> np.ndarray:
    link = PCIE_REFERENCE_GBPS if link_class(gpu) == "pcie" else gpu.interconnect_gbps
    return rows["bytes"].to_numpy(np.float64) / (link * 1e3)


def _quant_roofline(rows: pd.DataFrame, gpu: GPUSpec) -> np.ndarray:
    per_element = np.where(rows["kind"].to_numpy() == "quantize", 3.0, 2.0)  # read bf16 (+ write fp8)
    return rows["m"].to_numpy(np.float64) * rows["k"] * per_element / (gpu.hbm_bandwidth_gbps * 1e3)


#: table -> (rows kept, group columns, curve axes, roofline); columns in neither are pooled
OPS: dict[str, tuple[Callable[[pd.DataFrame], pd.Series], tuple[str, ...], tuple[str, ...], Roofline]] = {
    "gemm": (lambda t: t["dtype"].isin(GEMM_DTYPES) & t["m"].isin(GEMM_M), ("dtype",), ("m", "n", "k"), _gemm_roofline),
    "generation_attention": (lambda t: t["window"] == 0, ("kv_dtype", "kv_heads", "head_dim"), ("batch", "context"),
                             _decode_roofline),
    "context_attention": (lambda t: (t["window"] == 0) & (t["batch"] == 1), ("kv_dtype", "heads", "head_dim"),
                          ("isl",), _prefill_roofline),
    "allreduce": (lambda t: t["bytes"] > 0, ("impl", "num_gpus"), ("bytes",), _allreduce_roofline),
    "activation_quant": (lambda t: t["m"] > 0, ("kind",), ("m", "k"), _quant_roofline),
}
ATTENTION_SHAPE = ("heads", "kv_heads", "head_dim", "kv_dtype")


def link_class(gpu: GPUSpec) -> str:
    """'pcie' for PCIe GPUs, else 'nvlink' (NVLink, NVL72, xGMI: a switched GPU fabric)."""
    return "pcie" if gpu.interconnect.startswith("pcie") else "nvlink"


def _usable(gpu: GPUSpec, table: str, group: dict[str, Any]) -> bool:
    """Whether a GPU's datasheet has the peak this group's roofline divides by."""
    if table == "gemm" and group["dtype"] == "fp8":
        return gpu.fp8_tflops > 0
    return True


# -- fitting --------------------------------------------------------------------------------------
def _per_gpu(rows: pd.DataFrame, gpu: GPUSpec, group: tuple[str, ...], axes: tuple[str, ...],
             roofline: Roofline) -> tuple[pd.Series, pd.Series]:
    """One GPU's log floor per group and log efficiency per (group, axes), the pooled dimensions
    medianed."""
    floor = rows.groupby(list(group))["latency_us"].transform("min").to_numpy(np.float64)
    excess = rows["latency_us"].to_numpy(np.float64) - floor
    with np.errstate(divide="ignore"):
        eff = roofline(rows, gpu) / np.where(excess > 0, excess, 0.0)
    keys = rows[list(group + axes)].reset_index(drop=True)
    keys["log_eff"] = np.log(np.clip(eff, *EFFICIENCY_RANGE))
    floors = np.log(rows.groupby(list(group))["latency_us"].min().astype(np.float64))
    return floors, keys.groupby(list(group + axes))["log_eff"].median()


def _across(logs: pd.DataFrame, families: Mapping[str, str] | None) -> pd.Series:
    """The median across GPUs (columns) of log values, within each family first; exponentiated."""
    if families:
        logs = logs.T.groupby(lambda g: families.get(g, g)).median().T
    return np.exp(logs.median(axis=1, skipna=True))


def fit(tables: Mapping[str, KernelTables], gpus: tuple[str, ...] | None = None,
        families: Mapping[str, str] | None = FAMILIES) -> dict[str, Any]:
    """Efficiency curves across the named GPUs' tables (all of `FIT_GPUS` found, by default), as a
    JSON-able dict: per table, the median floor and efficiency curves across GPUs (across
    architectures of the medians within each, with `families`)."""
    gpus = tuple(g for g in (gpus or FIT_GPUS) if g in tables)
    if not gpus:
        raise ConfigError("fitted roofline: none of the GPUs to fit on has kernel tables")
    specs = {g: load_gpu(g) for g in gpus}
    out: dict[str, Any] = {
        "about": "Kernel efficiency curves fitted across the GPUs below: time = floor_us + roofline / efficiency "
                 "(rllmsim/cost/kernels/fitted.py). Derived by scripts/build_kernel_tables.py; never edit by hand.",
        "fitted_on": {g: {"device": tables[g].meta.get("device"), "sources": tables[g].meta.get("sources"),
                          "link": link_class(specs[g]),
                          "family": (families or {}).get(g, g),
                          "vllm_versions": tables[g].meta.get("vllm_versions", {}),
                          "datasheet": {f: getattr(specs[g], f) for f in ("bf16_tflops", "fp8_tflops",
                                                                          "hbm_bandwidth_gbps", "interconnect",
                                                                          "interconnect_gbps")}}
                      for g in gpus},
        "tables": {},
    }
    shapes: dict[str, set[tuple[Any, ...]]] = {}
    for name, (keep, group, axes, roofline) in OPS.items():
        classes = ("nvlink", "pcie") if name == "allreduce" else ("any",)
        for cls in classes:
            floors, effs, used = [], [], []
            for g in gpus:
                table = tables[g].table(name)
                if table is None or (cls != "any" and link_class(specs[g]) != cls):
                    continue
                rows = table[keep(table)]
                if name == "gemm" and specs[g].fp8_tflops <= 0:
                    rows = rows[rows["dtype"] != "fp8"]
                if rows.empty:
                    continue
                if name in ("generation_attention", "context_attention"):
                    shapes.setdefault(name, set()).update(
                        map(tuple, rows[list(ATTENTION_SHAPE)].drop_duplicates().itertuples(index=False)))
                f, e = _per_gpu(rows, specs[g], group, axes, roofline)
                floors.append(f.rename(g))
                effs.append(e.rename(g))
                used.append(g)
            if not used:
                continue
            floor = _across(pd.concat(floors, axis=1), families)
            median = _across(pd.concat(effs, axis=1), families)
            curves = []
            for key, value in floor.items():
                key = key if isinstance(key, tuple) else (key,)
                part = median.xs(key, level=list(range(len(group))), drop_level=True) if len(group) else median
                curves.append({**{c: _plain(v) for c, v in zip(group, key)}, "floor_us": _round(value),
                               **_dense(part, axes)})
            entry = {"group": list(group), "axes": list(axes), "fitted_on": used, "curves": curves}
            if cls == "any":
                out["tables"][name] = entry
            else:
                out["tables"].setdefault(name, {})[cls] = entry
    for name, found in shapes.items():
        out["tables"][name]["shapes"] = [list(map(_plain, s)) for s in sorted(found, key=str)]
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _round(value: float) -> float | None:
    return None if not np.isfinite(value) else float(f"{value:.{DIGITS}g}")


def _dense(series: pd.Series, axes: tuple[str, ...]) -> dict[str, Any]:
    """A curve as its axis values and a nested list of efficiencies (null where unmeasured)."""
    if len(axes) == 1:
        index = series.index.to_numpy()
        order = np.argsort(index)
        return {axes[0]: [_plain(v) for v in index[order]], "efficiency": [_round(v) for v in series.to_numpy()[order]]}
    levels = [sorted(series.index.get_level_values(i).unique()) for i in range(len(axes))]
    cube = np.full([len(v) for v in levels], np.nan)
    where = tuple(np.searchsorted(levels[i], series.index.get_level_values(i)) for i in range(len(axes)))
    cube[where] = series.to_numpy()
    nested = np.vectorize(_round, otypes=[object])(cube).tolist()
    return {**{a: [_plain(v) for v in lv] for a, lv in zip(axes, levels)}, "efficiency": nested}


def write(fitted: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(fitted, separators=(",", ":"), allow_nan=False) + "\n")


# -- synthesis ------------------------------------------------------------------------------------
def _curve_rows(curve: dict[str, Any], group: list[str], axes: list[str]) -> pd.DataFrame:
    eff = np.array(curve["efficiency"], dtype=np.float64)  # None -> nan
    grids = np.meshgrid(*[np.asarray(curve[a]) for a in axes], indexing="ij")
    ok = np.isfinite(eff)
    frame = pd.DataFrame({a: g[ok] for a, g in zip(axes, grids)})
    frame["efficiency"] = eff[ok]
    frame["floor_us"] = float(curve["floor_us"])
    for c in group:
        frame[c] = curve[c]
    return frame


def synthesize(gpu: GPUSpec, fitted: dict[str, Any]) -> KernelTables:
    """Kernel tables for `gpu`: every fitted grid point timed at its datasheet peaks."""
    if gpu.bf16_tflops <= 0 or gpu.hbm_bandwidth_gbps <= 0:
        raise ConfigError(f"{gpu.display_name} has no datasheet peaks to scale fitted efficiencies by")
    link = link_class(gpu)
    tables: dict[str, pd.DataFrame] = {}
    used: dict[str, list[str]] = {}
    for name, (_, _, _, roofline) in OPS.items():
        entry = fitted["tables"].get(name)
        if entry is None:
            continue
        if name == "allreduce":
            comm_class = link if link in entry else next(iter(entry), None)
            if comm_class is None:
                continue
            entry = entry[comm_class]
        frames = [_curve_rows(c, entry["group"], entry["axes"]) for c in entry["curves"]
                  if _usable(gpu, name, c)]
        if not frames:
            continue
        rows = pd.concat(frames, ignore_index=True)
        if name in ("generation_attention", "context_attention"):
            shapes = pd.DataFrame(entry["shapes"], columns=list(ATTENTION_SHAPE))
            rows = rows.merge(shapes, on=[c for c in entry["group"]], how="inner")
            rows["window"] = 0
            if name == "context_attention":
                rows["batch"] = 1
        rows["latency_us"] = rows["floor_us"] + roofline(rows, gpu) / rows["efficiency"]
        rows = _monotone(rows.drop(columns=["efficiency", "floor_us"]), entry["axes"])
        tables[name] = rows.reset_index(drop=True)
        used[name] = list(entry["fitted_on"])
    for name, frame in tables.items():
        for column in frame.columns:
            if column not in ("dtype", "kv_dtype", "impl", "kind", "latency_us"):
                frame[column] = frame[column].astype(np.int64)
    return KernelTables(tables, _meta(gpu, fitted, used, comm_class if "allreduce" in used else None))


def _monotone(rows: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """No kernel takes less time for more work (it could be padded): a running maximum along each
    axis, with every other column fixed. Medians across GPUs need not keep the ordering that each
    GPU's own measurements mostly have."""
    for axis in axes:
        others = [c for c in rows.columns if c not in (axis, "latency_us")]
        rows = rows.sort_values(others + [axis], kind="stable")
        rows["latency_us"] = rows.groupby(others, sort=False)["latency_us"].cummax()
    return rows


def _meta(gpu: GPUSpec, fitted: dict[str, Any], used: dict[str, list[str]], comm_class: str | None) -> dict[str, Any]:
    sources = fitted["fitted_on"]
    everyone = sorted({g for gs in used.values() for g in gs})
    versions: dict[str, str] = {}
    for g in everyone:
        for op, version in sources[g].get("vllm_versions", {}).items():
            versions.setdefault(op, set()).add(version)  # type: ignore[arg-type]
    notes = [f"no kernel tables for {gpu.name}: efficiency curves fitted across {', '.join(everyone)}, "
             f"scaled by the {gpu.name} datasheet peaks"]
    if gpu.vendor != "nvidia":
        notes.append(f"efficiencies fitted on NVIDIA GPUs, applied to this {gpu.vendor.upper()} GPU")
    if comm_class is not None:
        stand_in = "" if comm_class == link_class(gpu) else f" (no {link_class(gpu)} GPU was fitted: a stand-in)"
        scaled = ("in absolute time (PCIe all-reduce follows the host's topology, not the link generation)"
                  if comm_class == "pcie" else
                  f"scaled to its {gpu.interconnect} link ({gpu.interconnect_gbps:g} GB/s per direction)")
        kind = "PCIe" if comm_class == "pcie" else "NVLink-class"
        notes.append(f"all-reduce: vLLM's dispatch and NCCL as measured on the {kind} GPUs "
                     f"{', '.join(used['allreduce'])}{stand_in}, {scaled}")
    notes.append("no MoE table: MoE layers are timed as GEMMs per touched expert")
    return {
        "device": f"{gpu.display_name} (fitted roofline, not measured)",
        "sources": [{"kind": "fitted roofline", "file": f"rllmsim/data/kernels/{FILENAME}",
                     "fitted_on": {op: gs for op, gs in used.items()}, "notes": notes}],
        "vllm_versions": {op: ", ".join(sorted(v)) for op, v in sorted(versions.items())},
        "fitted": True,
    }


# -- the shipped fit ------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def shipped_fit() -> dict[str, Any] | None:
    path = _data_root() / FILENAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"fitted roofline: {path} is not readable JSON ({exc})") from None


@lru_cache(maxsize=None)
def fitted_tables(gpu: GPUSpec) -> KernelTables | None:
    """Synthetic kernel tables of a catalog GPU from the shipped fit (None without one, or
    without datasheet peaks)."""
    fitted = shipped_fit()
    if fitted is None or gpu.bf16_tflops <= 0 or gpu.hbm_bandwidth_gbps <= 0:
        return None
    return synthesize(gpu, fitted)


def label(gpu: GPUSpec, tables: KernelTables) -> str:
    """The `tables_label` of a kernel model on fitted tables."""
    used = tables.meta["sources"][0]["fitted_on"]
    gpus = sorted({g for gs in used.values() for g in gs})
    vendor = "; efficiencies fitted on NVIDIA GPUs" if gpu.vendor != "nvidia" else ""
    return f"fitted roofline (no kernel tables for {gpu.name}; curves from {', '.join(gpus)}{vendor})"
