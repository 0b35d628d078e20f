"""LLMServingSim's layer-wise vLLM profiles: `<GPU>/<org>/<model>/<variant>/{meta.yaml,tp<N>/*.csv}`.

Each profile is one decoder layer of one model measured inside a real vLLM engine (dummy weights,
eager), with TP emulated by shrinking the layer's shapes; see that project's README. They become
`LayerProfile`s: used when a deployment serves exactly that model at that TP on that GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rllmsim.cost.kernels.tables import KernelTables, LayerProfile
from rllmsim.errors import ConfigError
from rllmsim.specs import load_model


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"LLMServingSim profile: {path} is not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"LLMServingSim profile: {path} lacks column(s) {', '.join(missing)}")
    return frame


def _head_dim(hf_id: str) -> int:
    """head_dim from the catalog's config when the model is there; 128 (Llama, Qwen) otherwise."""
    try:
        return load_model(hf_id).head_dim
    except ConfigError:
        return 128


def _profile(meta: dict[str, Any], tp_dir: Path, tp: int, max_tp: int) -> LayerProfile:
    overrides = meta.get("engine_effective", {}).get("hf_overrides", {})
    hf_id = str(meta["model"])
    # hf_overrides record the shapes of the largest TP profiled; scale back to full, then split
    heads = int(overrides["num_attention_heads"]) * max_tp // tp
    kv_heads = max(1, int(overrides["num_key_value_heads"]) * max_tp // tp)
    dense = _read_csv(tp_dir / "dense.csv", ("layer", "tokens", "time_us"))
    attention = _read_csv(tp_dir / "attention.csv", ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"))
    per_seq = _read_csv(tp_dir / "per_sequence.csv", ("layer", "sequences", "time_us"))
    tables = {
        "linear": pd.DataFrame({"op": dense["layer"].astype(str), "tokens": dense["tokens"],
                                "latency_us": dense["time_us"]}),
        "attention": attention.rename(columns={"time_us": "latency_us"}),
        "per_sequence": pd.DataFrame({"op": per_seq["layer"].astype(str), "sequences": per_seq["sequences"],
                                      "latency_us": per_seq["time_us"]}),
    }
    if (tp_dir / "moe.csv").exists():
        moe = _read_csv(tp_dir / "moe.csv", ("tokens", "time_us"))
        tables["moe"] = pd.DataFrame({"tokens": moe["tokens"], "latency_us": moe["time_us"]})
    engine = meta.get("engine_effective", {})
    pmeta = {
        "source": "llmservingsim", "hf_id": hf_id, "tp": tp, "heads": heads, "kv_heads": kv_heads,
        "head_dim": _head_dim(hf_id), "vllm_version": str(meta.get("vllm_version", "")),
        "gpu": str(meta.get("gpu", "")), "enforce_eager": bool(engine.get("enforce_eager", False)),
        "variant": str(meta.get("variant", "")), "profiled_at": str(meta.get("profiled_at", "")),
    }
    slug = f"{hf_id.replace('/', '--')}-tp{tp}"
    return LayerProfile(slug, pmeta, tables)


def import_gpu(gpu_dir: Path) -> list[LayerProfile]:
    """Every model and TP degree profiled under one GPU folder (e.g. `perf/RTXPRO6000`)."""
    profiles = []
    for meta_path in sorted(Path(gpu_dir).glob("*/*/*/meta.yaml")):
        try:
            meta = yaml.safe_load(meta_path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"LLMServingSim profile: {meta_path} is not readable YAML ({exc})") from None
        if not isinstance(meta, dict) or "model" not in meta:
            raise ConfigError(f"LLMServingSim profile: {meta_path} names no model")
        degrees = [int(t) for t in meta.get("tp_degrees", [1])]
        for tp in degrees:
            tp_dir = meta_path.parent / f"tp{tp}"
            if tp_dir.is_dir():
                profiles.append(_profile(meta, tp_dir, tp, max(degrees)))
    if not profiles:
        raise ConfigError(f"LLMServingSim profile: no <org>/<model>/<variant>/meta.yaml under {gpu_dir}")
    return profiles


def as_tables(gpu_dir: Path) -> KernelTables:
    """A table set holding only the layer profiles of one GPU folder."""
    profiles = import_gpu(gpu_dir)
    meta = {"source": "llmservingsim", "device": profiles[0].meta["gpu"],
            "vllm_versions": {"layers": profiles[0].meta["vllm_version"]}}
    return KernelTables(tables={}, meta=meta, layer_profiles=profiles)
