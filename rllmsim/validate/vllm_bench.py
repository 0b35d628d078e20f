"""Reader for a `vllm bench serve --save-result --save-detailed` result JSON, with the server's
engine arguments and, optionally, a KV/queue timeseries polled from the server.

Per request the result holds ``input_lens, output_lens, ttfts, itls, latencies, start_times``
(time.perf_counter() at send, CLOCK_MONOTONIC on Linux) and ``errors``. The replay's arrival is
``start_times``: when the server received the request (under --max-concurrency the client's own
queueing came before it and is not the server's doing). TTFT, ITL and E2EL are the client's
measurements, as `vllm bench serve` reports them. Failed requests (an error or 0 output tokens)
are dropped.

The result JSON does not hold the server's engine arguments. They are read from, in order: the
file given as `engine_args`, ``<result stem>.engine.json``, ``meta.json`` beside the result (the
LLMServingSim layout), an ``engine_kwargs`` object inside the result, or the top-level keys that
`vllm bench serve --metadata key=value` adds. A flat object or one with ``engine_kwargs`` works.
The engine's KV capacity is read from ``kv_cache.num_gpu_blocks`` there, else ``num_gpu_blocks``.

A timeseries (``<stem>.timeseries.csv`` or ``timeseries.csv`` beside it) has columns
``t_monotonic`` (the same clock as start_times) or ``t`` (aligned by matching), and ``running,
waiting, kv_cache_pct`` (0-100), optionally ``prompt_throughput, gen_throughput``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rllmsim.errors import ConfigError
from rllmsim.validate.recorded import EngineArgs, RecordedRun, check_requests, recorded_num_gpu_blocks
from rllmsim.validate.timeline import align_log

NEEDED = ("input_lens", "output_lens", "ttfts", "start_times")


def is_vllm_bench(path: Path) -> bool:
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return False
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(head, dict) and {"input_lens", "output_lens"} <= set(head)


def read_vllm_bench(path: str | Path, engine_args: str | Path | None = None) -> RecordedRun:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: not a readable JSON result ({exc})") from None
    missing = [k for k in NEEDED if not isinstance(obj.get(k), list)]
    if missing:
        raise ConfigError(f"{path.name}: not a vllm bench --save-detailed result with per-request times "
                          f"(missing {', '.join(missing)}); rerun with --save-result --save-detailed")
    notes: list[str] = []
    requests, itl, t0 = _requests(obj, path.name, notes)
    engine = _engine(path, obj, engine_args, notes)
    run = RecordedRun(name=path.stem, source="vllm-bench", path=path, requests=requests, engine=engine,
                      itl_s=itl, notes=notes)
    run.timeseries = _timeseries(path, t0, requests, notes)
    return run


def _requests(obj: dict[str, Any], name: str, notes: list[str]) -> tuple[pd.DataFrame, np.ndarray | None, float]:
    """The completed requests (times from the first arrival), all ITLs, and the clock's zero."""
    n = len(obj["input_lens"])
    for key in ("output_lens", "ttfts", "start_times", "latencies", "itls", "errors"):
        if isinstance(obj.get(key), list) and len(obj[key]) != n:
            raise ConfigError(f"{name}: '{key}' has {len(obj[key])} entries, input_lens has {n}")
    errors = obj.get("errors") if isinstance(obj.get("errors"), list) else [""] * n
    itls = obj.get("itls") if isinstance(obj.get("itls"), list) else None
    start = np.asarray(obj["start_times"], dtype=np.float64)
    ttft = np.asarray(obj["ttfts"], dtype=np.float64)
    if isinstance(obj.get("latencies"), list):
        latency = np.asarray(obj["latencies"], dtype=np.float64)
    elif itls is not None:
        latency = ttft + np.array([float(np.sum(x)) for x in itls])
    else:
        raise ConfigError(f"{name}: no 'latencies' or 'itls': E2EL cannot be known")
    out = np.asarray(obj["output_lens"], dtype=np.float64)
    ok = np.array([not e for e in errors]) & (out > 0)
    if (~ok).any():
        notes.append(f"dropped {int((~ok).sum())} failed requests (an error or 0 output tokens)")
    frame = pd.DataFrame({
        "request_id": np.arange(n)[ok].astype(str),
        "arrival_s": start[ok],
        "prompt_tokens": np.asarray(obj["input_lens"])[ok],
        "output_tokens": out[ok],
        "first_token_s": (start + ttft)[ok],
        "finish_s": (start + latency)[ok],
    })
    itl = None
    if itls is not None:
        kept = [np.asarray(x, dtype=np.float64) for x, good in zip(itls, ok) if good]
        itl = np.concatenate(kept) if kept and any(len(x) for x in kept) else None
    if itl is None:
        notes.append("ITL not recorded (empty itls)")
    t0 = float(frame["arrival_s"].min()) if len(frame) else 0.0
    return check_requests(frame, name), itl, t0


def _engine(path: Path, obj: dict[str, Any], explicit: str | Path | None, notes: list[str]) -> EngineArgs:
    candidates = [Path(explicit)] if explicit else [path.with_name(path.stem + ".engine.json"),
                                                   path.with_name("meta.json")]
    for candidate in candidates:
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{candidate.name}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{candidate.name}: expected a JSON object of engine arguments")
            kwargs = dict(data.get("engine_kwargs") or data)
            for key in ("model", "vllm_version", "device", "num_gpu_blocks"):
                if data.get(key) is not None:
                    kwargs.setdefault(key, data[key])
            blocks = recorded_num_gpu_blocks(data, candidate.name)
            if blocks is not None:
                kwargs["num_gpu_blocks"] = blocks
            notes.append(f"engine arguments from {candidate.name}")
            return EngineArgs.from_mapping(kwargs, candidate.name)
        if explicit:
            raise ConfigError(f"engine args file not found: {candidate}")
    kwargs = dict(obj.get("engine_kwargs") or {})
    for key, value in obj.items():
        if not isinstance(value, (list, dict)):
            kwargs.setdefault(key, value)
    kwargs["model"] = kwargs.get("model") or obj.get("model_id")
    blocks = recorded_num_gpu_blocks(obj, path.name)
    if blocks is not None:
        kwargs["num_gpu_blocks"] = blocks
    notes.append("no engine-args file: engine arguments from the result's own keys (vllm bench --metadata), "
                 "the rest as vllm serve defaults them")
    return EngineArgs.from_mapping(kwargs, path.name)


def _timeseries(path: Path, t0: float, requests: pd.DataFrame, notes: list[str]) -> pd.DataFrame | None:
    for candidate in (path.with_name(path.stem + ".timeseries.csv"), path.with_name("timeseries.csv")):
        if candidate.is_file():
            break
    else:
        notes.append("no timeseries: KV usage compared against a reconstruction from request timestamps")
        return None
    raw = pd.read_csv(candidate)
    if not {"running", "waiting"} <= set(raw.columns) or not ({"t", "t_monotonic"} & set(raw.columns)):
        raise ConfigError(f"{candidate.name}: needs t or t_monotonic, running, waiting (and kv_cache_pct)")
    log = pd.DataFrame({
        "running": raw["running"].astype(np.float64),
        "waiting": raw["waiting"].astype(np.float64),
        "kv_cache_pct": raw["kv_cache_pct"].astype(np.float64) if "kv_cache_pct" in raw else np.nan,
        "prompt_tps": raw["prompt_throughput"].astype(np.float64) if "prompt_throughput" in raw else np.nan,
        "gen_tps": raw["gen_throughput"].astype(np.float64) if "gen_throughput" in raw else np.nan,
    })
    if "t_monotonic" in raw:
        log.insert(0, "t_s", raw["t_monotonic"].astype(np.float64) - t0)
        notes.append(f"timeseries from {candidate.name}, on the request clock (t_monotonic)")
    else:
        offset, fit = align_log(raw["t"].to_numpy(np.float64), (log["running"] + log["waiting"]).to_numpy(), requests)
        log.insert(0, "t_s", raw["t"].astype(np.float64) + offset)
        notes.append(f"timeseries from {candidate.name} aligned: t_s = t + {offset:.2f} s (mean abs mismatch {fit:.1f})")
    return log
