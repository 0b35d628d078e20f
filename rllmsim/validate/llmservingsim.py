"""Reader for LLMServingSim's recorded vLLM runs: a folder of requests.jsonl, timeseries.csv and
meta.json (casys-kaist/LLMServingSim, `bench/examples/<gpu>/<model>/vllm/`).

- requests.jsonl: ``request_id, input_toks, output_toks, arrival_time`` (client wall clock) and
  the engine-side ``queued_ts, scheduled_ts, first_token_ts, last_token_ts`` (monotonic clock).
  The engine-side times define the metrics (TTFT = first_token_ts - queued_ts, ...), so the
  replay uses ``queued_ts`` as each request's arrival: it is when the engine saw the request.
- timeseries.csv: ``t, prompt_throughput, gen_throughput, running, waiting, kv_cache_pct`` logged
  each tick. Its clock starts at an unrecorded moment; the offset to the request clock is found by
  matching running + waiting against the requests in the system (see `timeline.align_log`). A
  kv_cache_pct column that is 0 throughout while requests run was not recorded, and is read as
  missing rather than as an empty cache.
- meta.json: ``model``, ``vllm_version`` and ``engine_kwargs`` (vLLM's argument names), and the
  KV capacity the engine reported when the run recorded it: ``kv_cache.num_gpu_blocks`` (or
  ``num_gpu_blocks`` in ``engine_kwargs`` or at the top level).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rllmsim.errors import ConfigError
from rllmsim.validate.recorded import EngineArgs, RecordedRun, check_requests, recorded_num_gpu_blocks
from rllmsim.validate.timeline import align_log
from rllmsim.workload.traces import jsonl_records

REQUEST_KEYS = ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")
LOG_KEYS = ("t", "running", "waiting")


def is_llmservingsim(path: Path) -> bool:
    return path.is_dir() and (path / "requests.jsonl").is_file()


def read_llmservingsim(path: str | Path) -> RecordedRun:
    path = Path(path)
    if not is_llmservingsim(path):
        raise ConfigError(f"{path}: not an LLMServingSim run folder (no requests.jsonl)")
    notes: list[str] = []
    requests = _requests(path / "requests.jsonl")
    engine = _engine(path / "meta.json", notes)
    run = RecordedRun(name=_run_name(path), source="llmservingsim", path=path, requests=requests,
                      engine=engine, itl_s=None, notes=notes)
    notes.append("ITL not recorded: requests.jsonl keeps only first and last token times")
    log_path = path / "timeseries.csv"
    if log_path.is_file():
        run.timeseries = _timeseries(log_path, requests, notes)
    else:
        notes.append("no timeseries.csv: running/waiting/KV timeline not compared")
    return run


def _run_name(path: Path) -> str:
    """LLMServingSim keeps runs in <gpu>/<model>/vllm/ or <GPU>_<Model>/; name them by the folder
    that says which."""
    return path.parent.parent.name + "_" + path.parent.name if path.name == "vllm" else path.name


def _requests(path: Path) -> pd.DataFrame:
    rows, lines = jsonl_records(path, path.read_text(encoding="utf-8"))
    for no, rec in zip(lines, rows):
        missing = [k for k in REQUEST_KEYS if rec.get(k) is None]
        if missing:
            raise ConfigError(f"{path.name}: line {no}: missing {', '.join(missing)}")
    frame = pd.DataFrame.from_records(rows)
    out = pd.DataFrame({
        "request_id": frame["request_id"].astype(str) if "request_id" in frame else np.arange(len(frame)).astype(str),
        "arrival_s": frame["queued_ts"].astype(np.float64),
        "prompt_tokens": frame["input_toks"].astype(np.int64),
        "output_tokens": frame["output_toks"].astype(np.int64),
        "first_token_s": frame["first_token_ts"].astype(np.float64),
        "finish_s": frame["last_token_ts"].astype(np.float64),
    })
    if "scheduled_ts" in frame:
        out["scheduled_s"] = frame["scheduled_ts"].astype(np.float64)
    return check_requests(out, path.name)


def _engine(path: Path, notes: list[str]) -> EngineArgs:
    if not path.is_file():
        notes.append("no meta.json: engine arguments default as vllm serve picks them")
        return EngineArgs()
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path.name}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path.name}: expected a JSON object with engine_kwargs")
    kwargs = dict(meta.get("engine_kwargs") or {})
    for key in ("model", "vllm_version", "num_gpu_blocks"):
        kwargs.setdefault(key, meta.get(key))
    blocks = recorded_num_gpu_blocks(meta, path.name)
    if blocks is not None:
        kwargs["num_gpu_blocks"] = blocks
    return EngineArgs.from_mapping(kwargs, path.name)


def _timeseries(path: Path, requests: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, ValueError) as exc:
        raise ConfigError(f"{path.name}: not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [k for k in LOG_KEYS if k not in raw.columns]
    if missing:
        raise ConfigError(f"{path.name}: missing column(s) {', '.join(missing)}")
    log = pd.DataFrame({
        "t_log": raw["t"].astype(np.float64),
        "running": raw["running"].astype(np.float64),
        "waiting": raw["waiting"].astype(np.float64),
        "kv_cache_pct": raw["kv_cache_pct"].astype(np.float64) if "kv_cache_pct" in raw else np.nan,
        "prompt_tps": raw["prompt_throughput"].astype(np.float64) if "prompt_throughput" in raw else np.nan,
        "gen_tps": raw["gen_throughput"].astype(np.float64) if "gen_throughput" in raw else np.nan,
    })
    if log["kv_cache_pct"].notna().any() and (log["kv_cache_pct"].fillna(0) == 0).all() and (log["running"] > 0).any():
        log["kv_cache_pct"] = np.nan
        notes.append("timeseries.csv kv_cache_pct is 0 throughout while requests run: KV usage was not "
                     "recorded; compared against KV usage reconstructed from request timestamps instead")
    offset, fit = align_log(log["t_log"].to_numpy(), (log["running"] + log["waiting"]).to_numpy(), requests)
    log.insert(0, "t_s", log["t_log"] + offset)
    notes.append(f"timeseries clock aligned to the request clock: t_s = t + {offset:.2f} s "
                 f"(running+waiting vs requests in system, mean abs mismatch {fit:.1f})")
    return log
