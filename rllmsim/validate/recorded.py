"""What a recorded real run is, whatever file it came from: requests, engine args, timeseries.

Every reader (LLMServingSim folders, `vllm bench serve` results) produces one `RecordedRun`:

- `requests`: one row per completed request, times in seconds from the first arrival, with the
  columns ``arrival_s, prompt_tokens, output_tokens, first_token_s, finish_s`` and optionally
  ``scheduled_s`` (engine-side first schedule). TTFT, TPOT and E2EL follow from them exactly as
  vLLM defines them (see `real_latencies`).
- `itl_s`: every inter-token gap the run recorded, or None when it recorded none (an
  LLMServingSim log keeps only first and last token times).
- `timeseries`: the engine's own periodic log, columns ``t_s`` (seconds from the first arrival,
  aligned), ``running, waiting, kv_cache_pct`` (NaN where not recorded), optionally
  ``prompt_tps, gen_tps`` (tokens per second of the interval ending at t_s); None if absent.
- `engine`: the vLLM engine arguments the run was served with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from rllmsim.errors import ConfigError

# vLLM engine-argument names (and their CLI spellings) -> EngineArgs fields.
_ALIASES = {
    "tensor_parallel_size": "tp", "tp": "tp", "tp_size": "tp",
    "data_parallel_size": "data_parallel_size", "dp": "data_parallel_size", "replicas": "replicas",
    "pipeline_parallel_size": "pipeline_parallel_size", "pp": "pipeline_parallel_size", "pp_size": "pipeline_parallel_size",
}


@dataclass(frozen=True)
class EngineArgs:
    """The engine arguments of a recorded run, by vLLM's names; None = vLLM's default.

    `num_gpu_blocks` is the KV capacity the real engine reported (a measurement, not a knob);
    `device` names the hardware it ran on when the record says so.
    """

    model: str | None = None
    tp: int = 1
    replicas: int = 1
    data_parallel_size: int = 1  # DP ranks of one engine (rllmsim.parallel), not independent replicas
    pipeline_parallel_size: int = 1
    enable_expert_parallel: bool | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    gpu_memory_utilization: float | None = None
    block_size: int | None = None
    enable_chunked_prefill: bool | None = None
    enable_prefix_caching: bool | None = None
    num_gpu_blocks: int | None = None
    device: str | None = None
    vllm_version: str | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str) -> "EngineArgs":
        """Read vLLM-named arguments (`tensor_parallel_size`, `max_num_seqs`, ...); unknown keys
        are ignored, values given as strings (`vllm bench --metadata k=v`) are converted."""
        known = {f.name: f for f in fields(cls)}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            name = _ALIASES.get(str(key).replace("-", "_"), str(key).replace("-", "_"))
            if name not in known or value is None or value == "":
                continue
            out[name] = (_block_count(value, source, str(key)) if name == "num_gpu_blocks"
                         else _convert(name, value, known[name].type, source))
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def recorded_num_gpu_blocks(meta: Mapping[str, Any], source: str) -> int | None:
    """The KV capacity a run's metadata records as ``kv_cache.num_gpu_blocks`` (vLLM's
    ``cache_config.num_gpu_blocks`` after profiling); None when it has no ``kv_cache`` object.
    The readers fall back to ``num_gpu_blocks`` in the engine arguments or at the top level."""
    cache = meta.get("kv_cache")
    if cache is None:
        return None
    if not isinstance(cache, Mapping):
        raise ConfigError(f"{source}: kv_cache={cache!r} is not an object; expected {{\"num_gpu_blocks\": N}}")
    value = cache.get("num_gpu_blocks")
    if value is None:
        return None
    if isinstance(value, str):  # a JSON record holds the number itself, not its text
        raise ConfigError(f"{source}: kv_cache.num_gpu_blocks={value!r} is not a block count (a positive integer)")
    return _block_count(value, source, "kv_cache.num_gpu_blocks")


def _block_count(value: Any, source: str, field_name: str) -> int:
    """A recorded num_gpu_blocks: a positive integer (an integer string from `vllm bench
    --metadata num_gpu_blocks=N` too); a bool, a fraction, a non-number or <= 0 is refused."""
    number: Any = value
    if isinstance(value, str) and value.strip().lstrip("+").isdigit():
        number = int(value)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ConfigError(f"{source}: {field_name}={value!r} is not a block count (a positive integer)")
    return number


def _convert(name: str, value: Any, kind: Any, source: str) -> Any:
    kind = str(kind)
    try:
        if "bool" in kind:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if "int" in kind:
            number = float(value)
            if number != int(number):
                raise ValueError(value)
            return int(number)
        if "float" in kind:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: engine argument {name}={value!r} is not a valid {kind}") from None


@dataclass
class RecordedRun:
    """One real serving run, ready to be replayed and compared."""

    name: str
    source: str
    path: Path
    requests: pd.DataFrame
    engine: EngineArgs
    itl_s: np.ndarray | None = None
    timeseries: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """First arrival to last completion, as `vllm bench serve` measures a benchmark."""
        r = self.requests
        return float(r["finish_s"].max() - r["arrival_s"].min()) if len(r) else 0.0

    @property
    def kv_recorded(self) -> bool:
        ts = self.timeseries
        return ts is not None and bool(ts["kv_cache_pct"].notna().any())


def real_latencies(requests: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-request TTFT, TPOT, E2EL (seconds) as vLLM defines them: TTFT = first token - arrival,
    E2EL = last token - arrival, TPOT = (last - first) / (output - 1) for outputs over 1 token."""
    ttft = (requests["first_token_s"] - requests["arrival_s"]).to_numpy(dtype=np.float64)
    e2el = (requests["finish_s"] - requests["arrival_s"]).to_numpy(dtype=np.float64)
    out = requests["output_tokens"].to_numpy(dtype=np.float64)
    multi = out > 1
    tpot = (e2el[multi] - ttft[multi]) / (out[multi] - 1)
    return {"ttft": ttft, "tpot": tpot, "e2el": e2el}


def check_requests(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Shift times so the first arrival is 0, sort by arrival, and refuse impossible rows."""
    if frame.empty:
        raise ConfigError(f"{source}: no completed requests to compare")
    cols = ["arrival_s", "first_token_s", "finish_s"] + (["scheduled_s"] if "scheduled_s" in frame else [])
    t0 = float(frame["arrival_s"].min())
    frame = frame.copy()
    for col in cols:
        frame[col] = frame[col].astype(np.float64) - t0
    bad = (frame["first_token_s"] < frame["arrival_s"]) | (frame["finish_s"] < frame["first_token_s"])
    bad |= (frame["prompt_tokens"] < 1) | (frame["output_tokens"] < 1)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ConfigError(f"{source}: request {frame.index[i]} has impossible times or lengths "
                          f"(first token before arrival, last before first, or a 0-token length)")
    frame = frame.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    frame["prompt_tokens"] = frame["prompt_tokens"].astype(np.int64)
    frame["output_tokens"] = frame["output_tokens"].astype(np.int64)
    return frame
