"""Trace readers: real request logs in their native formats, turned into one Request table.

Formats (name: key columns; detected from the file's columns or keys when fmt="auto"):

- ``mooncake``: JSONL ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``
  (one id per 512-token block; equal leading ids = shared prefix). Requests whose first block
  is shared get a ``prefix_group`` and ``prefix_tokens`` = the blocks all of them share.
- ``vllm-bench``: a ``vllm bench serve --save-result --save-detailed`` JSON: ``input_lens``,
  ``output_lens``, ``start_times`` (perf_counter at send), ``queue_times`` (client-side wait under
  --max-concurrency; arrival = start - queue), ``errors``. Failed requests (an error or 0 output
  tokens) are dropped: their real length is unknown. Results from vLLM versions that do not save
  ``start_times`` hold no arrival times, and reconstructing them from ``request_rate`` would invent
  data, so they are refused: use ``EmpiricalLengths.from_file`` on them with a synthetic process.
- ``burstgpt``: CSV ``Timestamp`` (s), ``Request tokens``, ``Response tokens``. Rows with 0
  response tokens are failures in BurstGPT and are dropped, as are 0-token prompts; the count
  is kept in ``table.attrs["trace"]["dropped"]`` and logged.
- ``azure``: Azure LLM inference trace CSV ``TIMESTAMP`` (datetime), ``ContextTokens``,
  ``GeneratedTokens``; rows with 0 generated tokens are dropped the same way.
- ``llmservingsim``: LLMServingSim ``requests.jsonl``: ``input_toks``, ``output_toks``,
  ``arrival_time`` (wall clock, s).
- ``generic``: CSV/JSONL/Parquet with ``arrival_s`` (or ``timestamp``/``arrival_time``, in
  seconds), ``prompt_tokens`` and ``output_tokens`` (or input_len/output_len, input_toks/
  output_toks); optional ``dataset``, ``prefix_group``, ``prefix_tokens``, ``hash_ids``.

Times are shifted so the first arrival is 0, then MULTIPLIED by ``time_scale``: 0.5 replays the
trace twice as fast (double the rate), 2.0 half as fast. Any other bad value (missing field,
non-numeric, negative or zero tokens) is a ConfigError naming the file and line (or row).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rllmsim.checks import MAX_TOKENS
from rllmsim.errors import ConfigError
from rllmsim.workload.table import make_request_table, prefix_groups_from_hashes

log = logging.getLogger(__name__)

MOONCAKE_BLOCK_TOKENS = 512
PROMPT_ALIASES = ("prompt_tokens", "input_len", "input_toks", "prompt_len")
OUTPUT_ALIASES = ("output_tokens", "output_len", "output_toks")
TIME_ALIASES = ("arrival_s", "timestamp", "arrival_time")


@dataclass
class TraceFile:
    """A loaded file: records as a frame (with each row's line/row number) or one JSON object."""

    path: Path
    frame: pd.DataFrame | None = None
    obj: dict[str, Any] | None = None
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unit: str = "line"
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def keys(self) -> set[str]:
        return set(self.obj) if self.obj is not None else set(map(str, self.frame.columns))

    def fail(self, i: int, msg: str) -> ConfigError:
        return ConfigError(f"{self.path.name}: {self.unit} {int(self.lines[i])}: {msg}")

    def require(self, cols: tuple[str, ...], fmt: str) -> None:
        missing = [c for c in cols if c not in self.keys()]
        if missing:
            raise ConfigError(f"{self.path.name}: not a {fmt} trace, missing {', '.join(missing)}")

    def column(self, col: str, integer: bool = True, min_value: float | None = 1) -> np.ndarray:
        """`col` as float64, checked: finite, whole if `integer`, >= min_value if given."""
        raw = self.frame[col]
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(vals)
        if integer:
            bad |= vals != np.round(vals)
        if min_value is not None:
            bad |= vals < min_value
        if integer:
            bad |= np.abs(vals) > MAX_TOKENS  # past int32: not a real count, and would overflow
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            v = raw.iloc[i].item() if isinstance(raw.iloc[i], np.generic) else raw.iloc[i]
            got = "missing" if v is None or (isinstance(v, float) and math.isnan(v)) else f"got {v!r}"
            want = "an integer" if integer else "a number"
            if min_value is not None:
                want += f" >= {min_value:g}"
            if integer:
                want += f" and <= {MAX_TOKENS}"
            raise self.fail(i, f"field '{col}' must be {want}, {got}")
        return vals


def _load(path: Path) -> TraceFile:
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".parquet", ".pq")):
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{path.name}: not a readable Parquet file: {why}") from None
        return TraceFile(path, frame=df, lines=np.arange(1, len(df) + 1), unit="row")
    if suffix.endswith((".csv", ".csv.gz", ".tsv")):
        try:
            df = pd.read_csv(path, low_memory=False, sep="\t" if ".tsv" in suffix else ",")
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:  # OSError: bad gzip
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{path.name}: not a readable CSV: {why}") from None
        return TraceFile(path, frame=df, lines=np.arange(2, len(df) + 2))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: not UTF-8 text; traces are JSONL, JSON, CSV or Parquet") from None
    if suffix.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path.name}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
        if isinstance(data, dict):
            return TraceFile(path, obj=data)
        if isinstance(data, list) and all(isinstance(r, dict) for r in data):
            return TraceFile(path, pd.DataFrame.from_records(data), None, np.arange(len(data)), "record")
        raise ConfigError(f"{path.name}: expected a JSON object or a list of objects")
    records, lines = jsonl_records(path, text)
    return TraceFile(path, frame=pd.DataFrame.from_records(records), lines=np.asarray(lines))


def jsonl_records(path: Path, text: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The objects of a JSON-lines text and their line numbers; a bad line is a one-line error."""
    records, lines = [], []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path.name}: line {no}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ConfigError(f"{path.name}: line {no}: expected a JSON object per line")
        records.append(rec)
        lines.append(no)
    return records, lines


def _frame(arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray, **extra: Any) -> pd.DataFrame:
    return pd.DataFrame({"arrival_s": arrival, "prompt_tokens": prompt, "output_tokens": output, **extra})


def _drop(tf: TraceFile, keep: np.ndarray, why: str) -> None:
    """Restrict the file to rows in `keep`, recording how many went and why."""
    n_drop = int((~keep).sum())
    if n_drop:
        tf.frame = tf.frame[keep].reset_index(drop=True)
        tf.lines = tf.lines[keep]
        tf.dropped += n_drop
        tf.notes.append(f"dropped {n_drop} rows: {why}")


def read_mooncake(tf: TraceFile) -> pd.DataFrame:
    tf.require(("timestamp", "input_length", "output_length"), "mooncake")
    arrival = tf.column("timestamp", integer=False, min_value=None) / 1000.0
    prompt, output = tf.column("input_length"), tf.column("output_length")
    if "hash_ids" not in tf.frame.columns:
        return _frame(arrival, prompt, output)
    hashes = _hash_lists(tf)
    group, ptok = prefix_groups_from_hashes(hashes, prompt.astype(np.int64), MOONCAKE_BLOCK_TOKENS)
    return _frame(arrival, prompt, output, prefix_group=group, prefix_tokens=ptok, hash_ids=hashes)


def _hash_lists(tf: TraceFile) -> list[list[int]]:
    """The `hash_ids` column as lists of ints; a missing entry is an empty list (none known)."""
    out: list[list[int]] = []
    for i, h in enumerate(tf.frame["hash_ids"]):
        if h is None or (isinstance(h, float) and math.isnan(h)):
            h = []
        h = list(h) if isinstance(h, (list, tuple, np.ndarray)) else h
        ints = isinstance(h, list) and all(
            isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in h
        )
        if not ints:
            raise tf.fail(i, "field 'hash_ids' must be a list of integers")
        out.append([int(x) for x in h])
    return out


def read_vllm_bench(tf: TraceFile) -> pd.DataFrame:
    tf.require(("input_lens", "output_lens"), "vllm-bench")
    obj = tf.obj
    if "start_times" not in obj:
        raise ConfigError(
            f"{tf.path.name}: this vllm bench result has no per-request 'start_times' (older vLLM), "
            "so it holds no arrival times; use EmpiricalLengths.from_file on it with a synthetic "
            f"arrival process (it ran at request_rate={obj.get('request_rate')}, "
            f"burstiness={obj.get('burstiness')})"
        )
    _bench_frame(tf, ("input_lens", "output_lens", "start_times", "queue_times"))
    arrival = tf.column("start_times", integer=False, min_value=None)
    if "queue_times" in tf.frame.columns:
        arrival = arrival - pd.to_numeric(tf.frame["queue_times"], errors="coerce").fillna(0.0).to_numpy()
    return _frame(arrival, tf.column("input_lens"), tf.column("output_lens"))


def _bench_frame(tf: TraceFile, keys: tuple[str, ...]) -> None:
    """Per-request lists of a vllm bench result as a frame, failed requests dropped."""
    obj = tf.obj
    for key in keys[:3]:
        if key in obj and not isinstance(obj[key], list):
            raise ConfigError(f"{tf.path.name}: field '{key}' must be a list with one entry per request")
    cols = {k: obj[k] for k in keys if isinstance(obj.get(k), list)}
    n = len(cols.get("input_lens", []))
    for k, v in cols.items():
        if len(v) != n:
            raise ConfigError(f"{tf.path.name}: '{k}' has {len(v)} entries, input_lens has {n}")
    tf.frame, tf.lines, tf.unit = pd.DataFrame(cols), np.arange(n), "request"
    errors = obj.get("errors") if isinstance(obj.get("errors"), list) else []
    failed = np.array([bool(e) for e in (errors + [""] * n)[:n]], dtype=bool)
    out = pd.to_numeric(tf.frame["output_lens"], errors="coerce").to_numpy()
    _drop(tf, ~((out == 0) | failed), "failed requests (an error or 0 output tokens)")


def read_burstgpt(tf: TraceFile) -> pd.DataFrame:
    tf.require(("Timestamp", "Request tokens", "Response tokens"), "burstgpt")
    tf.column("Request tokens", min_value=0)
    resp = tf.column("Response tokens", min_value=0)
    _drop(tf, resp > 0, "0 response tokens (failed requests in BurstGPT)")
    _drop(tf, tf.column("Request tokens", min_value=0) > 0, "0 request tokens")
    arrival = tf.column("Timestamp", integer=False, min_value=None)
    return _frame(arrival, tf.column("Request tokens"), tf.column("Response tokens"))


def read_azure(tf: TraceFile) -> pd.DataFrame:
    tf.require(("TIMESTAMP", "ContextTokens", "GeneratedTokens"), "azure")
    tf.column("ContextTokens")
    _drop(tf, tf.column("GeneratedTokens", min_value=0) > 0, "0 generated tokens")
    stamps = pd.to_datetime(tf.frame["TIMESTAMP"], format="ISO8601", errors="coerce", utc=True)
    if stamps.isna().any():
        i = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise tf.fail(i, f"field 'TIMESTAMP' must be a date-time, got {tf.frame['TIMESTAMP'].iloc[i]!r}")
    arrival = (stamps - stamps.min()).dt.total_seconds().to_numpy()
    return _frame(arrival, tf.column("ContextTokens"), tf.column("GeneratedTokens"))


def read_llmservingsim(tf: TraceFile) -> pd.DataFrame:
    tf.require(("input_toks", "output_toks", "arrival_time"), "llmservingsim")
    arrival = tf.column("arrival_time", integer=False, min_value=None)
    return _frame(arrival, tf.column("input_toks"), tf.column("output_toks"))


def _pick(tf: TraceFile, aliases: tuple[str, ...], what: str) -> str:
    for name in aliases:
        if name in tf.keys():
            return name
    raise ConfigError(f"{tf.path.name}: no {what} column; expected one of {', '.join(aliases)}")


def read_generic(tf: TraceFile) -> pd.DataFrame:
    if tf.frame is None:
        raise ConfigError(f"{tf.path.name}: expected one request per line/row, got one JSON object")
    arrival = tf.column(_pick(tf, TIME_ALIASES, "arrival time"), integer=False, min_value=None)
    prompt = tf.column(_pick(tf, PROMPT_ALIASES, "prompt length"))
    output = tf.column(_pick(tf, OUTPUT_ALIASES, "output length"))
    extra: dict[str, Any] = {}
    if "dataset" in tf.frame.columns:
        extra["dataset"] = tf.frame["dataset"].astype(str).to_numpy()
    if "prefix_group" in tf.frame.columns:
        tf.require(("prefix_group", "prefix_tokens"), "generic (with prefixes)")
        extra["prefix_group"] = tf.column("prefix_group", min_value=-1)
        extra["prefix_tokens"] = tf.column("prefix_tokens", min_value=0)
    if "hash_ids" in tf.frame.columns:
        extra["hash_ids"] = _hash_lists(tf)
    return _frame(arrival, prompt, output, **extra)


TraceReader = Callable[[TraceFile], pd.DataFrame]
TRACE_FORMATS: dict[str, TraceReader] = {
    "mooncake": read_mooncake,
    "vllm-bench": read_vllm_bench,
    "burstgpt": read_burstgpt,
    "azure": read_azure,
    "llmservingsim": read_llmservingsim,
    "generic": read_generic,
}
# Checked in this order by detect_format; generic is the fallback.
FORMAT_SIGNATURES: dict[str, frozenset[str]] = {
    "vllm-bench": frozenset({"input_lens", "output_lens"}),
    "mooncake": frozenset({"timestamp", "input_length", "output_length"}),
    "llmservingsim": frozenset({"input_toks", "output_toks", "arrival_time"}),
    "burstgpt": frozenset({"Timestamp", "Request tokens", "Response tokens"}),
    "azure": frozenset({"TIMESTAMP", "ContextTokens", "GeneratedTokens"}),
}


def detect_format(tf: TraceFile) -> str:
    """The first format whose key columns the file has; ConfigError listing them if none."""
    keys = tf.keys()
    for name, sig in FORMAT_SIGNATURES.items():
        if sig <= keys:
            return name
    if all(any(a in keys for a in al) for al in (TIME_ALIASES, PROMPT_ALIASES, OUTPUT_ALIASES)):
        return "generic"
    known = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in FORMAT_SIGNATURES.items())
    raise ConfigError(
        f"{tf.path.name}: unknown trace format (columns {', '.join(sorted(keys)[:8])}); "
        f"expected {known}; or generic: arrival_s, prompt_tokens, output_tokens"
    )


def _open(path: str | Path) -> TraceFile:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"trace file not found: {p}")
    return _load(p)


def read_trace(
    path: str | Path, fmt: str = "auto", time_scale: float = 1.0, dataset: str | None = None
) -> pd.DataFrame:
    """Read a trace into a Request table (see the module doc for formats and time_scale).

    `dataset` labels every request; by default a generic file's `dataset` column, else the
    file's stem. `table.attrs["trace"]` records the format, rows dropped and why.
    """
    if isinstance(time_scale, bool) or not isinstance(time_scale, Real) or not (
        math.isfinite(time_scale) and time_scale > 0
    ):
        raise ConfigError(f"time_scale must be a finite number > 0 (0.5 = twice as fast), got {time_scale!r}")
    tf = _open(path)
    name = detect_format(tf) if fmt == "auto" else fmt
    if name not in TRACE_FORMATS:
        raise ConfigError(f"unknown trace format {fmt!r}; choose auto or one of: {', '.join(TRACE_FORMATS)}")
    raw = TRACE_FORMATS[name](tf)
    if raw.empty:
        raise ConfigError(f"{tf.path.name}: no usable requests in the trace")
    info = {"format": name, "path": str(tf.path), "time_scale": float(time_scale),
            "dropped": tf.dropped, "notes": list(tf.notes)}
    for note in tf.notes:
        log.info("%s: %s", tf.path.name, note)
    arrival = raw["arrival_s"].to_numpy(dtype=np.float64)
    label = dataset or (raw["dataset"].to_numpy() if "dataset" in raw.columns else tf.path.stem)
    table = make_request_table(
        (arrival - arrival.min()) * float(time_scale),
        raw["prompt_tokens"].to_numpy(),
        raw["output_tokens"].to_numpy(),
        label,
        prefix_group=raw["prefix_group"].to_numpy() if "prefix_group" in raw.columns else None,
        prefix_tokens=raw["prefix_tokens"].to_numpy() if "prefix_tokens" in raw.columns else None,
        hash_ids=list(raw["hash_ids"]) if "hash_ids" in raw.columns else None,
        source=tf.path.name,
    )
    table.attrs["trace"] = info
    return table


def bench_model_id(path: str | Path) -> str | None:
    """The `model_id` a vllm bench result file records; None for any other trace format."""
    tf = _open(path)
    if tf.obj is None or detect_format(tf) != "vllm-bench":
        return None
    model = tf.obj.get("model_id")
    return model if isinstance(model, str) and model else None


def read_length_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_tokens, output_tokens) of every usable request in a file, arrival times not needed.

    Accepts a vllm bench result (even one without start_times), any trace format, or a table
    with just the two length columns (or their aliases).
    """
    tf = _open(path)
    if tf.obj is not None and {"input_lens", "output_lens"} <= tf.keys():
        _bench_frame(tf, ("input_lens", "output_lens"))
        prompt, output = tf.column("input_lens"), tf.column("output_lens")
    elif tf.frame is not None and not any(a in tf.keys() for a in TIME_ALIASES + ("Timestamp", "TIMESTAMP")):
        prompt = tf.column(_pick(tf, PROMPT_ALIASES, "prompt length"))
        output = tf.column(_pick(tf, OUTPUT_ALIASES, "output length"))
    else:
        table = read_trace(path)
        prompt, output = table["prompt_tokens"].to_numpy(), table["output_tokens"].to_numpy()
    if len(prompt) == 0:
        raise ConfigError(f"{tf.path.name}: no usable (prompt, output) pairs")
    return prompt.astype(np.int64), output.astype(np.int64)
