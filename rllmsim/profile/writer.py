"""Writes a profile incrementally: `<name>.parquet` (steps) and `<name>.json` (metadata).

Both files are replaced atomically (temp file + rename) at every flush, so a profile that is
interrupted, or whose engine dies, keeps every step measured up to the last flush and says so in
its metadata ("status": "interrupted" or "failed"). The format is defined in
`rllmsim.cost.profile_table`, which is what calibration reads.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from rllmsim.cost.profile_table import PROFILE_FORMAT, profile_paths


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ProfileWriter:
    """Collects step rows and metadata; `flush()` rewrites both files atomically."""

    def __init__(self, out_dir: str | Path, name: str, flush_every_s: float = 5.0):
        self.parquet_path, self.json_path = profile_paths(Path(out_dir) / name)
        self.name = name
        self.rows: list[dict[str, Any]] = []
        self.metadata: dict[str, Any] = {"format": PROFILE_FORMAT, "name": name,
                                         "status": "starting", "created": now_iso()}
        self.flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        self._flushed_rows = -1

    def update_metadata(self, **fields: Any) -> None:
        self.metadata.update(fields)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        self.metadata["steps_recorded"] = len(self.rows)
        self.metadata["updated"] = now_iso()
        if self.rows and len(self.rows) != self._flushed_rows:
            frame = pd.DataFrame(self.rows)
            _atomic_write(self.parquet_path, lambda tmp: frame.to_parquet(tmp, index=False))
            self._flushed_rows = len(self.rows)
        text = json.dumps(self.metadata, indent=2, sort_keys=False, default=str) + "\n"
        _atomic_write(self.json_path, lambda tmp: Path(tmp).write_text(text))
        self._last_flush = time.monotonic()

    def close(self, status: str) -> None:
        self.metadata["status"] = status
        self.metadata["finished"] = now_iso()
        self.flush()
