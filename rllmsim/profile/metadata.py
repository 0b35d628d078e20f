"""What a profile was measured on: host, device, model shape. No vllm import at module level."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

from rllmsim.errors import ConfigError


def resolve_model(model: str) -> tuple[str, Path | None]:
    """A model is a local directory holding config.json, or a Hugging Face id ("org/name").

    Returns (display name, local directory or None). A local path that lacks config.json is a
    user mistake, reported in one line.
    """
    path = Path(model).expanduser()
    if path.exists():
        if path.is_file() and path.name == "config.json":
            path = path.parent
        config = path / "config.json"
        if not config.is_file():
            raise ConfigError(f"model config not found: {config}")
        return path.resolve().name, path.resolve()
    looks_like_hub_id = (model.count("/") == 1 and not model.startswith((".", "/", "~"))
                         and all(part for part in model.split("/")))
    if not looks_like_hub_id:
        raise ConfigError(f"model config not found: {model} (give a directory holding "
                          f"config.json, or a Hugging Face model id such as org/name)")
    return model, None


def read_local_config(model_dir: Path | None) -> dict[str, Any] | None:
    if model_dir is None:
        return None
    try:
        return json.loads((model_dir / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{model_dir / 'config.json'} is not valid JSON: {err}") from None


def model_shape(config: dict[str, Any]) -> dict[str, Any]:
    """The handful of numbers that set a decoder's cost, plus a parameter-count estimate for
    Llama/Qwen-style dense models (gated MLP, untied or tied embeddings)."""
    text = config.get("text_config") or config
    hidden = text.get("hidden_size")
    heads = text.get("num_attention_heads")
    kv_heads = text.get("num_key_value_heads", heads)
    head_dim = text.get("head_dim") or (hidden // heads if hidden and heads else None)
    layers = text.get("num_hidden_layers")
    inter = text.get("intermediate_size")
    vocab = text.get("vocab_size")
    shape = {
        "architectures": config.get("architectures"),
        "model_type": config.get("model_type"),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "max_position_embeddings": text.get("max_position_embeddings"),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
    }
    if all(isinstance(v, int) for v in (hidden, heads, kv_heads, head_dim, layers, inter, vocab)):
        attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
        mlp = 3 * hidden * inter
        embed = vocab * hidden * (1 if shape["tie_word_embeddings"] else 2)
        shape["approx_params"] = layers * (attn + mlp + 2 * hidden) + embed + hidden
        shape["kv_elems_per_token"] = 2 * layers * kv_heads * head_dim
    return shape


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(is_cpu: bool) -> dict[str, Any]:
    import torch  # present wherever vllm is

    info: dict[str, Any] = {"type": "cpu" if is_cpu else "cuda"}
    if is_cpu:
        info["name"] = _cpu_name()
        info["cores"] = os.cpu_count()
        info["torch_threads"] = torch.get_num_threads()
    else:
        info["name"] = torch.cuda.get_device_name(0)
        info["count"] = torch.cuda.device_count()
        info["memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
        info["cuda"] = torch.version.cuda
    info["torch_version"] = torch.__version__
    return info


def describe_host() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def relevant_env() -> dict[str, str]:
    keys = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND",
            "VLLM_ATTENTION_BACKEND", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD")
    return {k: os.environ[k] for k in keys if k in os.environ}
