"""`DIR/results.parquet`: one row per finished run, rewritten atomically after every run.

Each append writes the whole table to a temporary sibling and renames it over the old file, so a
reader (or a sweep killed mid-write) sees either the old table or the new one, never half of one.
Rows are keyed by `key`, the hash of the run's config and seed; a sweep skips keys already here.
Rewriting costs O(rows) per run, a few milliseconds for thousands of rows.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from rllmsim.errors import ConfigError

RESULTS_FILE = "results.parquet"
FIRST_COLUMNS = ("key", "run_index", "status", "error")


class ResultsStore:
    """The results table of one sweep directory, loaded once and appended to."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RESULTS_FILE
        self.frame = read_results(self.path) if self.path.exists() else pd.DataFrame()

    def finished_keys(self, include_failed: bool = True) -> set[str]:
        if self.frame.empty:
            return set()
        rows = self.frame if include_failed else self.frame[self.frame["status"] == "ok"]
        return set(rows["key"])

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        new = pd.DataFrame(list(rows))
        if new.empty:
            return
        keys = set(new["key"])
        old = self.frame[~self.frame["key"].isin(keys)] if not self.frame.empty else self.frame
        frame = pd.concat([old, new], ignore_index=True) if not old.empty else new
        self.frame = _order_columns(frame)
        self.write()

    def sort_by_index(self, index_by_key: Mapping[str, int] | None = None) -> None:
        """Grid order, for the final write (rows are appended in finishing order); rows of the
        current grid take their index in it, rows of an older spec keep theirs."""
        if not self.frame.empty:
            if index_by_key:
                current = self.frame["key"].map(index_by_key)
                self.frame["run_index"] = current.fillna(self.frame["run_index"]).astype("int64")
            self.frame = self.frame.sort_values(["run_index", "key"], kind="stable").reset_index(drop=True)
            self.write()

    def write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{RESULTS_FILE}.", suffix=".tmp")
        os.close(fd)
        try:
            self.frame.to_parquet(tmp, index=False)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def read_results(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no sweep results here; run `rllmsim sweep SPEC --out DIR` first") from None
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
        raise ConfigError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None
    for column in ("key", "status"):
        if column not in frame.columns:
            raise ConfigError(f"{path}: not a sweep results table (no {column!r} column)")
    return frame


def _order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in FIRST_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
