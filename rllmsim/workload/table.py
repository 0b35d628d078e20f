"""The Request table: the one shape every workload takes before the engine sees it.

Synthetic workloads (arrivals x lengths) and trace readers all end here, so the engine, the
metrics and the reports read one contract instead of N formats. A row is one request; the
engine owns its progress, this table only says who arrives when, with what.

Columns, in this order:

- ``request_id``   int64, 0..n-1 in arrival order
- ``arrival_s``    float64, seconds from the start, non-decreasing, finite, >= 0
- ``prompt_tokens``  int64 >= 1
- ``output_tokens``  int64 >= 1, the target output length (after any token budget)
- ``dataset``      string, the dataset or trace the request came from
- ``prefix_group`` int64, -1 = no shared prefix
- ``prefix_tokens`` int64 >= 0, how many of the request's first tokens are its group's prefix
  (0 when the group is -1, never more than the request's prompt). Requests of a group share
  their first min(prefix_tokens) tokens: one value for a system prompt, a growing one for a
  conversation's turns, each of whose prefix is its whole prompt (`sessions.py`)
- ``hash_ids``     optional, object: list[int] of per-block prefix hashes (Mooncake style);
  absent when unknown
- ``reasoning_tokens`` optional, int64 in [0, output_tokens]: how many of the output tokens are
  reasoning, emitted before the answer (absent: all output is visible answer)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rllmsim.errors import ConfigError

REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "dataset",
    "prefix_group",
    "prefix_tokens",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("hash_ids", "reasoning_tokens")
_INT_COLUMNS = ("request_id", "prompt_tokens", "output_tokens", "prefix_group", "prefix_tokens")


def make_request_table(
    arrival_s: Sequence[float] | np.ndarray,
    prompt_tokens: Sequence[int] | np.ndarray,
    output_tokens: Sequence[int] | np.ndarray,
    dataset: str | Sequence[str] | np.ndarray,
    prefix_group: Sequence[int] | np.ndarray | None = None,
    prefix_tokens: Sequence[int] | np.ndarray | None = None,
    hash_ids: Sequence[list[int]] | None = None,
    source: str = "workload",
    reasoning_tokens: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Build a validated Request table from per-request arrays.

    Rows are stably sorted by arrival (ties keep their given order) and numbered 0..n-1, so
    callers may pass requests in any order. `dataset` may be one label for all rows.
    """
    arrival = np.asarray(arrival_s, dtype=np.float64)
    n = arrival.shape[0]
    labels = [dataset] * n if isinstance(dataset, str) else list(dataset)
    cols: dict[str, Any] = {
        "arrival_s": arrival,
        "prompt_tokens": np.asarray(prompt_tokens),
        "output_tokens": np.asarray(output_tokens),
        "dataset": labels,
        "prefix_group": np.full(n, -1) if prefix_group is None else np.asarray(prefix_group),
        "prefix_tokens": np.zeros(n) if prefix_tokens is None else np.asarray(prefix_tokens),
    }
    if hash_ids is not None:
        cols["hash_ids"] = list(hash_ids)
    if reasoning_tokens is not None:
        cols["reasoning_tokens"] = np.asarray(reasoning_tokens)
    for name, values in cols.items():
        if len(values) != n:
            raise ConfigError(
                f"{source}: column '{name}' has {len(values)} values but arrival_s has {n}"
            )
    if np.isnan(arrival).any():
        bad = int(np.flatnonzero(np.isnan(arrival))[0])
        raise ConfigError(f"{source}: row {bad}: column 'arrival_s' is NaN; give a number")
    order = np.argsort(arrival, kind="stable")
    df = pd.DataFrame({k: _take(v, order) for k, v in cols.items()})
    df.insert(0, "request_id", np.arange(n, dtype=np.int64))
    return validate_request_table(df, source)


def _take(values: Any, order: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[order]
    return [values[i] for i in order]


def validate_request_table(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check `df` against the contract and return it with canonical column order and dtypes.

    Raises ConfigError naming `source` and the first bad row and column, because a table
    usually comes from a user's file and the fix is in that file.
    """
    missing = [c for c in REQUEST_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{source}: request table lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(REQUEST_COLUMNS)}"
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for col in _INT_COLUMNS:
        out[col] = _as_int(df[col], col, source)
    arrival = pd.to_numeric(df["arrival_s"], errors="coerce").to_numpy(dtype=np.float64)
    _first_bad(~np.isfinite(arrival), source, "arrival_s", "must be a finite number of seconds")
    _first_bad(arrival < 0, source, "arrival_s", "must be >= 0 (seconds from the start)")
    decreasing = np.zeros(len(arrival), dtype=bool)
    decreasing[1:] = np.diff(arrival) < 0
    _first_bad(decreasing, source, "arrival_s", "must be sorted non-decreasing")
    out.insert(1, "arrival_s", arrival)
    ids = out["request_id"].to_numpy()
    _first_bad(ids != np.arange(len(ids)), source, "request_id", "must be 0..n-1 in arrival order")
    prompt = out["prompt_tokens"].to_numpy()
    _first_bad(prompt < 1, source, "prompt_tokens", "must be >= 1")
    _first_bad(out["output_tokens"].to_numpy() < 1, source, "output_tokens", "must be >= 1")
    group = out["prefix_group"].to_numpy()
    ptok = out["prefix_tokens"].to_numpy()
    _first_bad(group < -1, source, "prefix_group", "must be -1 (none) or a group id >= 0")
    _first_bad(ptok < 0, source, "prefix_tokens", "must be >= 0")
    _first_bad(ptok > prompt, source, "prefix_tokens", "must be <= prompt_tokens")
    _first_bad((group == -1) & (ptok != 0), source, "prefix_tokens", "must be 0 when prefix_group is -1")
    labels = df["dataset"].to_numpy(dtype=object)
    empty = np.array([not isinstance(v, str) or v == "" for v in labels], dtype=bool)
    _first_bad(empty, source, "dataset", "must be a non-empty label")
    out["dataset"] = pd.array(labels, dtype="string")
    out = out[list(REQUEST_COLUMNS)]
    if "hash_ids" in df.columns:
        out["hash_ids"] = _check_hash_ids(df["hash_ids"], source)
    if "reasoning_tokens" in df.columns:
        reasoning = _as_int(df["reasoning_tokens"], "reasoning_tokens", source)
        _first_bad(reasoning < 0, source, "reasoning_tokens", "must be >= 0")
        _first_bad(reasoning > out["output_tokens"].to_numpy(), source, "reasoning_tokens",
                   "must be <= output_tokens (reasoning is part of the output)")
        out["reasoning_tokens"] = reasoning
    out.attrs.update(df.attrs)
    return out


def _as_int(col: pd.Series, name: str, source: str) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    _first_bad(~np.isfinite(values), source, name, "must be an integer")
    _first_bad(values != np.round(values), source, name, "must be a whole number")
    return values.astype(np.int64)


def _first_bad(mask: np.ndarray, source: str, column: str, rule: str) -> None:
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        raise ConfigError(f"{source}: row {row}: column '{column}' {rule}")


def _check_hash_ids(col: pd.Series, source: str) -> list[list[int]]:
    out: list[list[int]] = []
    for row, value in enumerate(col):
        if not isinstance(value, (list, tuple, np.ndarray)) or not all(
            isinstance(h, (int, np.integer)) and not isinstance(h, bool) for h in value
        ):
            raise ConfigError(f"{source}: row {row}: column 'hash_ids' must be a list of integers")
        out.append([int(h) for h in value])
    return out


def prefix_groups_from_hashes(
    hashes: list[list[int]], prompt: np.ndarray, block_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Group requests by their first block hash; the group's prefix is what ALL members share.

    Requests whose first block nobody else has stay ungrouped (-1). Finer sharing (a few members
    sharing more blocks) is left to `hash_ids`, which the prefix cache can use directly.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        if h:
            members[h[0]].append(i)
    group = np.full(len(hashes), -1, dtype=np.int64)
    ptok = np.zeros(len(hashes), dtype=np.int64)
    next_id = 0
    for idx in members.values():
        if len(idx) < 2:
            continue
        common = min(len(hashes[i]) for i in idx)
        for k in range(1, common):
            if any(hashes[i][k] != hashes[idx[0]][k] for i in idx):
                common = k
                break
        group[idx] = next_id
        ptok[idx] = min(common * block_tokens, int(prompt[idx].min()))
        next_id += 1
    return group, ptok
