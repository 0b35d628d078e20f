"""Writing a run directory atomically: everything lands in a temporary sibling, then one rename.

A crash or Ctrl-C mid-write leaves no half-written run behind, and a reader never sees a
`summary.json` without its tables.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from rllmsim.checks import clean_stale_staging, staging_prefix, writable_dir
from rllmsim.errors import ConfigError


def default_run_dir(label: str, root: str | Path = "runs") -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{label}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return writable_dir(path, f"--out (default {root}/)")


def check_new_dir(path: str | Path) -> Path:
    """Refuse to overwrite: a run directory is written once."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {path} already exists and is not empty; choose a new directory or remove it")
    return writable_dir(path)


def to_jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null, as strict JSON requires."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create owner-only entries; give them the modes a plain create would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_json_atomic(path: str | Path, payload: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(to_jsonable(payload), handle, indent=2, sort_keys=False)
        handle.write("\n")
    _as_if_created(Path(tmp))
    os.replace(tmp, path)


@contextmanager
def staged_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory beside `path`; when the block ends without error it
    becomes `path` in one rename, otherwise it is removed. `path` must be new or empty."""
    path = check_new_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(path.parent)  # a SIGKILLed writer's leftovers
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=staging_prefix(path.name), suffix=".tmp"))
    _as_if_created(staging, directory=True)
    try:
        yield staging
        if path.exists():
            path.rmdir()
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_run(path: str | Path, tables: dict[str, pd.DataFrame], summary: dict[str, Any],
              extra_files: dict[str, str] | None = None) -> Path:
    """Write `<name>.parquet` for each table, `summary.json` and any text files, atomically."""
    with staged_directory(path) as staging:
        for name, frame in tables.items():
            frame.to_parquet(staging / f"{name}.parquet", index=False)
        write_json_atomic(staging / "summary.json", summary)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
    return Path(path)


def write_simulation(path: str | Path, output: Any, model_id: str, timeline: bool = True,
                     extra_files: dict[str, str] | None = None) -> Path:
    """A simulation's run directory, the same wherever one is written (`simulate --out`,
    `Run.save`, `compare --save-runs`, `sweep --save-runs`): requests.parquet, timeline.parquet
    (unless `timeline` is off), summary.json and bench.json, the run in `vllm bench serve
    --save-result` form for `model_id`. `output` is a `rllmsim.simulation.RunOutput`."""
    from rllmsim.metrics.bench_json import BENCH_FILE, bench_result

    bench = bench_result(output.summary, output.requests, output.result.itl, model_id)
    tables = {"requests": output.requests, **({"timeline": output.result.timeline} if timeline else {})}
    files = {BENCH_FILE: json.dumps(to_jsonable(bench), indent=2) + "\n", **(extra_files or {})}
    return write_run(path, tables, output.summary, extra_files=files)
