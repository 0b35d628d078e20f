"""Kernel tables: measured vLLM kernel and layer times of one GPU, in one canonical schema.

A table set is a folder: `tables.json` (where the numbers come from) and one parquet per op, plus
`layers/<name>/` for layer-wise profiles of one model at one TP degree (LLMServingSim's format,
or a user's own). The shipped sets live in `rllmsim/data/kernels/<gpu>/`, built from public
measurements by `scripts/build_kernel_tables.py`; a user's set is read the same way and checked
the same way, because a file a user gives is data, not trusted code.

Schema (latency always in microseconds, sizes per GPU):
- gemm: dtype, m (tokens), n, k
- context_attention: batch, isl, heads, kv_heads, head_dim, kv_dtype, window (prefill from empty)
- generation_attention: batch, context, heads, kv_heads, head_dim, kv_dtype, window (one decode)
- allreduce: impl (vllm_graph | vllm_eager: vLLM's own all-reduce dispatch; nccl; nccl_all_gather, nccl_reduce_scatter, nccl_alltoall: the DP MoE exchange), num_gpus, bytes
- moe: dtype, tokens, hidden, inter, topk, experts, tp, ep
- activation_quant: kind (quantize: static fp8 quantization of an m x k input; dynamic_scale:
  the extra time of computing its scale per token), m, k
- mla_context / mla_generation: one MLA attention module (DeepSeek-V3-style: q/kv down- and
  up-projections, norms, rotary, attention with the absorbed BMMs, o_proj) per layer, at `heads`
  query heads per GPU: dtype (of its GEMMs), kv_dtype, heads, batch, isl (prefill from empty) or
  context (one decode), and the MLA dimensions hidden, q_lora, kv_lora, nope_dim, rope_dim, v_dim
Layer profiles: linear (op, tokens), attention (prefill_chunk, kv_prefill, n_decode, kv_decode),
per_sequence (op, sequences), optional moe (tokens).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rllmsim.cost.kernels.lookup import GemmGrid
from rllmsim.errors import ConfigError

SCHEMA: dict[str, tuple[str, ...]] = {
    "gemm": ("dtype", "m", "n", "k"),
    "context_attention": ("batch", "isl", "heads", "kv_heads", "head_dim", "kv_dtype", "window"),
    "generation_attention": ("batch", "context", "heads", "kv_heads", "head_dim", "kv_dtype", "window"),
    "allreduce": ("impl", "num_gpus", "bytes"),
    "moe": ("dtype", "tokens", "hidden", "inter", "topk", "experts", "tp", "ep"),
    "activation_quant": ("kind", "m", "k"),
    "mla_context": ("dtype", "kv_dtype", "heads", "batch", "isl", "hidden", "q_lora", "kv_lora", "nope_dim",
                    "rope_dim", "v_dim"),
    "mla_generation": ("dtype", "kv_dtype", "heads", "batch", "context", "hidden", "q_lora", "kv_lora",
                       "nope_dim", "rope_dim", "v_dim"),
}
LAYER_SCHEMA: dict[str, tuple[str, ...]] = {
    "linear": ("op", "tokens"),
    "attention": ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode"),
    "per_sequence": ("op", "sequences"),
    "moe": ("tokens",),
}
_TEXT_COLUMNS = frozenset({"dtype", "kv_dtype", "impl", "op", "kind"})
_POSITIVE_COLUMNS = frozenset({"m", "n", "k", "batch", "isl", "heads", "kv_heads", "head_dim", "context", "num_gpus",
                               "bytes", "tokens", "hidden", "inter", "topk", "experts", "tp", "ep", "sequences",
                               "kv_lora", "rope_dim", "v_dim"})


@dataclass
class LayerProfile:
    """Layer-wise times of one model at one TP degree on this GPU, measured inside vLLM.

    `meta` names the model (`hf_id`), `tp`, the per-GPU attention shape (`heads`, `kv_heads`,
    `head_dim`), the vLLM version and whether the engine ran eager.
    """

    name: str
    meta: dict[str, Any]
    tables: dict[str, pd.DataFrame]


@dataclass
class KernelTables:
    """All tables of one GPU, with the provenance of each."""

    tables: dict[str, pd.DataFrame]
    meta: dict[str, Any]
    layer_profiles: list[LayerProfile] = field(default_factory=list)
    _grids: dict[str, GemmGrid] = field(default_factory=dict, repr=False, compare=False)
    #: per-deployment state of the cost models built on these tables (see KernelCostModel)
    built_models: dict[Any, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def table(self, name: str) -> pd.DataFrame | None:
        return self.tables.get(name)

    def gemm_grid(self, dtype: str) -> GemmGrid:
        """The GEMM rows of one dtype as a dense cube, built once: every deployment on this GPU
        looks up its projections in it."""
        grid = self._grids.get(dtype)
        if grid is None:
            rows = self.tables["gemm"]
            rows = rows[rows["dtype"] == dtype]
            grid = self._grids[dtype] = GemmGrid(rows["m"].to_numpy(), rows["n"].to_numpy(), rows["k"].to_numpy(),
                                                 rows["latency_us"].to_numpy())
        return grid

    def profile_for(self, hf_id: str, tp: int) -> LayerProfile | None:
        """The layer profile measured for this model (by HF id, case-insensitive) at this TP."""
        for profile in self.layer_profiles:
            if str(profile.meta.get("hf_id", "")).lower() == hf_id.lower() and int(profile.meta.get("tp", 0)) == tp:
                return profile
        return None

    # -- files --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write the set to `directory` atomically (a staging folder renamed into place)."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        meta = dict(self.meta, tables=sorted(self.tables), layer_profiles=[p.name for p in self.layer_profiles])
        (staging / "tables.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        for name, frame in self.tables.items():
            _write(frame, staging / f"{name}.parquet")
        for profile in self.layer_profiles:
            folder = staging / "layers" / profile.name
            folder.mkdir(parents=True)
            (folder / "profile.json").write_text(json.dumps(profile.meta, indent=2, sort_keys=True) + "\n")
            for name, frame in profile.tables.items():
                _write(frame, folder / f"{name}.parquet")
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)

    @classmethod
    def load(cls, directory: str | Path) -> "KernelTables":
        """Read and check a table set; any defect ends in one ConfigError naming the file."""
        root = Path(directory)
        meta = _read_json(root / "tables.json")
        names = meta.get("tables", [])
        if not isinstance(names, list) or not all(n in SCHEMA for n in names):
            raise ConfigError(f"{root / 'tables.json'}: 'tables' must list some of {', '.join(SCHEMA)}")
        tables = {n: _read_table(root / f"{n}.parquet", SCHEMA[n]) for n in names}
        profiles = []
        for name in meta.get("layer_profiles", []):
            folder = root / "layers" / str(name)
            pmeta = _read_json(folder / "profile.json")
            for key in ("hf_id", "tp", "heads", "kv_heads", "head_dim"):
                if key not in pmeta:
                    raise ConfigError(f"{folder / 'profile.json'}: missing '{key}'")
            ptables = {n: _read_table(folder / f"{n}.parquet", cols)
                       for n, cols in LAYER_SCHEMA.items() if (folder / f"{n}.parquet").exists()}
            for required in ("linear", "attention", "per_sequence"):
                if required not in ptables:
                    raise ConfigError(f"{folder}: layer profile lacks {required}.parquet")
            profiles.append(LayerProfile(str(name), pmeta, ptables))
        return cls(tables, meta, profiles)


def _write(frame: pd.DataFrame, path: Path) -> None:
    frame.reset_index(drop=True).to_parquet(path, index=False, compression="zstd")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"kernel tables: {path} is missing; build tables with `rllmsim kernels import`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"kernel tables: {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"kernel tables: {path} must hold a JSON object")
    return data


def _read_table(path: Path, key_columns: tuple[str, ...]) -> pd.DataFrame:
    """Read one parquet table and check its columns, types and values."""
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for damaged files
        raise ConfigError(f"kernel tables: {path} is not a readable parquet table ({type(exc).__name__})") from None
    missing = [c for c in (*key_columns, "latency_us") if c not in frame.columns]
    if missing:
        raise ConfigError(f"kernel tables: {path} lacks column(s) {', '.join(missing)}")
    if frame.empty:
        raise ConfigError(f"kernel tables: {path} has no rows")
    for column in (*key_columns, "latency_us"):
        if column in _TEXT_COLUMNS:
            frame[column] = frame[column].astype(str)
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"kernel tables: {path} column {column} has missing or non-finite values")
        floor_ok = values > 0 if (column in _POSITIVE_COLUMNS or column == "latency_us") else values >= 0
        if not np.all(floor_ok):
            raise ConfigError(f"kernel tables: {path} column {column} has out-of-range values "
                              f"(must be {'> 0' if column in _POSITIVE_COLUMNS or column == 'latency_us' else '>= 0'})")
        frame[column] = values if column == "latency_us" else values.astype(np.int64)
    return frame


# -- the shipped sets ---------------------------------------------------------------------------
def _data_root() -> Path:
    return Path(str(resources.files("rllmsim") / "data" / "kernels"))


def shipped_gpus() -> tuple[str, ...]:
    """Catalog names of the GPUs whose kernel tables ship with rllmsim."""
    root = _data_root()
    if not root.is_dir():
        return ()
    return tuple(sorted(p.name for p in root.iterdir() if (p / "tables.json").is_file()))


@lru_cache(maxsize=None)
def shipped_tables(gpu_name: str) -> KernelTables | None:
    """The shipped tables of a catalog GPU, or None when it has none."""
    folder = _data_root() / gpu_name
    if not (folder / "tables.json").is_file():
        return None
    return KernelTables.load(folder)
