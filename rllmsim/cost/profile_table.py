"""The profile file format: where the profiler and the cost models meet.

A profile is two files side by side: `<name>.parquet`, one row per measured engine step, and
`<name>.json`, the metadata that says what was measured (engine, device, model, pool). The
profiler (`rllmsim.profile`) writes them; calibration reads them through this module, so the cost
package never imports the profiler.

Columns every profile has (besides the FEATURE_NAMES features, exact integers):

    step            int    index of the step in the run
    cell            str    grid cell the step belongs to ("decode/B8xC512", "prefill/L256xN4", ...)
    phase           str    warmup | setup | prefill | decode | mixed
    kind            str    prefill | decode | mixed, from what the engine scheduled
    wall_s          float  wall time of LLMEngine.step(), measured around the call
    kv_blocks_used  int    KV blocks allocated once the step was scheduled
    running         int    running requests after the step (vLLM SchedulerStats)
    waiting         int    waiting requests after the step (vLLM SchedulerStats)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rllmsim.cost.features import FEATURE_NAMES, StepFeatures
from rllmsim.errors import ConfigError

PROFILE_FORMAT = "rllmsim.profile/1"
BASE_COLUMNS: tuple[str, ...] = (
    "step", "cell", "phase", "kind", "wall_s", "kv_blocks_used", "running", "waiting",
)
REQUIRED_COLUMNS: tuple[str, ...] = BASE_COLUMNS + FEATURE_NAMES
#: Metadata keys the simulator and calibration rely on.
REQUIRED_METADATA: tuple[str, ...] = (
    "format", "model", "dtype", "tp", "kv_cache_dtype", "block_size", "num_gpu_blocks", "device",
)


def step_kind(prefill_seqs: int, decode_seqs: int) -> str:
    if prefill_seqs and decode_seqs:
        return "mixed"
    return "prefill" if prefill_seqs else "decode"


def profile_paths(path: str | Path) -> tuple[Path, Path]:
    """Accept `profiles/x`, `profiles/x.parquet` or `profiles/x.json`; return both files."""
    p = Path(path)
    if p.suffix in (".parquet", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".parquet"), p.with_name(p.name + ".json")


@dataclass
class Profile:
    frame: pd.DataFrame
    metadata: dict[str, Any]
    parquet_path: Path
    json_path: Path

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.parquet_path.stem)

    def features(self, frame: pd.DataFrame | None = None) -> StepFeatures:
        return StepFeatures.from_columns(self.frame if frame is None else frame)


def read_profile(path: str | Path) -> Profile:
    """Load and validate a profile; user mistakes raise ConfigError with one line."""
    parquet_path, json_path = profile_paths(path)
    if not parquet_path.exists():
        raise ConfigError(f"profile not found: {parquet_path}")
    if not json_path.exists():
        raise ConfigError(f"profile metadata not found: {json_path} (it is written beside the "
                          f"parquet file by `rllmsim profile`)")
    try:
        metadata = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"profile metadata {json_path} is not valid JSON: {err}") from None
    if not isinstance(metadata, dict):
        raise ConfigError(f"profile metadata {json_path} must hold a JSON object, got {type(metadata).__name__}")
    if metadata.get("format") != PROFILE_FORMAT:
        raise ConfigError(f"{json_path}: format is {metadata.get('format')!r}, expected "
                          f"{PROFILE_FORMAT!r}")
    missing_meta = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing_meta:
        raise ConfigError(f"{json_path}: metadata lacks {', '.join(missing_meta)}")
    try:
        frame = pd.read_parquet(parquet_path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ConfigError(f"cannot read profile {parquet_path}: {err}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"{parquet_path}: missing columns {', '.join(missing)}")
    if len(frame) == 0:
        raise ConfigError(f"{parquet_path} holds no measured steps")
    return Profile(frame=frame, metadata=metadata, parquet_path=parquet_path,
                   json_path=json_path)
