"""Shared validators: one place per kind of value, used by every command, grid and file reader.

A value a user gives (a flag, a sweep or plan grid entry, a field of a file) is checked where it
enters, before any work, so a mistake ends in one `ConfigError` line naming the field and the
fix instead of a traceback, a silently clamped value or a sweep of failed rows. The rules that
vLLM enforces (attention heads divisible by TP, a max_model_len within the model's context) are
here too, so the simulator refuses what the real engine refuses.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Iterable, Mapping

from rllmsim.engine.kv_offload import BACKENDS
from rllmsim.errors import ConfigError

#: numpy's SeedSequence takes any non-negative int; a signed 64-bit bound keeps seeds portable.
MAX_SEED = 2**63 - 1
#: Bytes a simulated request costs across the request table, the engine and the summaries (an
#: over-estimate measured on 40k-request runs), for refusing counts that cannot be held.
BYTES_PER_REQUEST = 4096
#: Allowed KV block sizes, as vLLM's --block-size choices.
BLOCK_SIZES = (1, 8, 16, 32, 64, 128)
#: Token counts past this are not a real request (and overflow int32 kernels in vLLM).
MAX_TOKENS = 2**31 - 1


def _fail(field: str, want: str, value: Any, fix: str = "") -> ConfigError:
    return ConfigError(f"{field} must be {want}, got {value!r}" + (f"; {fix}" if fix else ""))


def number(value: Any, field: str, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None, allow_inf: bool = False, fix: str = "") -> float:
    """A real number, not NaN, finite unless `allow_inf`, within the bounds; returns it."""
    parts = []
    if above is not None:
        parts.append(f"> {above:g}")
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    want = ("a number" if allow_inf else "a finite number") + (" " + " and ".join(parts) if parts else "")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _fail(field, want, value, fix)
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or (above is not None and not v > above) or \
            (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise _fail(field, want, value, fix)
    return v


def integer(value: Any, field: str, *, minimum: int | None = None, maximum: int | None = None,
            fix: str = "") -> int:
    """A whole number (bools refused) within the bounds; returns it as an int."""
    bounds = " and ".join(p for p in (f">= {minimum}" if minimum is not None else "",
                                      f"<= {maximum}" if maximum is not None else "") if p)
    want = "an integer" + (f" {bounds}" if bounds else "")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise _fail(field, want, value, fix)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(field, want, value, fix)
    return int(value)


def seed(value: Any, field: str = "seed") -> int:
    return integer(value, field, minimum=0, maximum=MAX_SEED, fix="give a seed such as 0")


def straggler_factor(value: Any, field: str = "straggler_factor") -> float:
    return number(value, field, above=0, fix="a request is a straggler past this multiple of the median, e.g. 3")


def slo_limits(limits: Mapping[str, float], field: str = "--goodput") -> Mapping[str, float]:
    """Per-request SLO limits in seconds: finite and positive (a NaN limit passes nothing silently)."""
    for name, limit in limits.items():
        number(limit, f"{field} {name}", above=0, fix=f"give milliseconds, as in {name}:500")
    return limits


def request_count(value: Any, field: str = "num_requests") -> int:
    """A request count the machine can hold: refused up front rather than a MemoryError later."""
    count = integer(value, field, minimum=1)
    limit = max(_physical_memory() // 2 // BYTES_PER_REQUEST, 1)
    if count > limit:
        raise ConfigError(f"{field} {count} needs about {count * BYTES_PER_REQUEST / 2**30:,.0f} GiB of memory, "
                          f"more than this machine can hold; give at most {limit:,} (or a --duration)")
    return count


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 16 * 2**30


# -- deployment and workload values --------------------------------------------------------------

def tp_size(value: Any, field: str = "tp") -> int:
    tp = integer(value, field, minimum=1, fix="give a power of two such as 1, 2, 4 or 8")
    if tp & (tp - 1):
        raise _fail(field, "a power of two", value, "give 1, 2, 4 or 8")
    return tp


def engine_fields(fields: Mapping[str, Any], where: str = "") -> None:
    """The engine arguments of a grid or flag set that have one valid range whatever the model."""
    rules = {
        "tp": tp_size,
        "replicas": lambda v, f: integer(v, f, minimum=1),
        "gpu_memory_utilization": lambda v, f: number(v, f, above=0, maximum=1, fix="give a share such as 0.9"),
        "block_size": lambda v, f: v if v in BLOCK_SIZES and not isinstance(v, bool) else _raise(
            _fail(f, f"one of {', '.join(map(str, BLOCK_SIZES))}", v)),
        "max_num_seqs": lambda v, f: integer(v, f, minimum=1),
        "max_num_batched_tokens": lambda v, f: integer(v, f, minimum=1),
        "max_model_len": lambda v, f: integer(v, f, minimum=1),
        "num_gpu_blocks_override": lambda v, f: integer(v, f, minimum=1),
        "num_speculative_tokens": lambda v, f: integer(v, f, minimum=0, maximum=16),
        "spec_acceptance_rate": lambda v, f: number(v, f, minimum=0, maximum=1),
    }
    for name, values in fields.items():
        if name in rules:
            for value in values if isinstance(values, list) else [values]:
                if value is not None:
                    rules[name](value, f"{where}{name}")


def _raise(err: Exception):
    raise err


def deployment(dep: Any) -> None:
    """What vLLM refuses about a whole deployment beyond its single fields (hook: Deployment)."""
    model = dep.model
    heads = getattr(model, "num_attention_heads", 0)
    if heads and heads % dep.tp:
        raise ConfigError(f"tp {dep.tp} does not divide the {heads} attention heads of {model.name} "
                          "(vLLM requires it); choose a tp that divides them")
    context = getattr(model, "max_position_embeddings", None)
    if context and dep.max_model_len > context:
        raise ConfigError(f"max_model_len {dep.max_model_len} is beyond the {context}-token context of "
                          f"{model.name} (vLLM refuses it); give --max-model-len <= {context}")
    if dep.speculative_method is None and dep.draft_model is not None:
        raise ConfigError("draft_model needs --speculative-method draft_model; add it or drop --draft-model")


def migration(dep: Any) -> None:
    """`--enable-migration` needs replicas of single, stepping engine cores (hook: Deployment)."""
    number(dep.migration_interval_s, "migration_interval_s", above=0, fix="give seconds, e.g. 0.1")
    if not dep.enable_migration:
        return
    if dep.engine_cores < 2:
        raise ConfigError("enable_migration needs at least two replicas (or dense DP ranks) to move requests "
                          "between; raise --replicas")
    if dep.pipeline_parallel_size > 1 or (dep.data_parallel_size > 1 and dep.model.num_experts):
        raise ConfigError("enable_migration with pipeline stages or lockstep MoE DP ranks is not modelled; use "
                          "--pipeline-parallel-size 1 and plain --replicas")
    if dep.model.attention.num_sliding_layers:
        raise ConfigError(f"enable_migration with the sliding-window layers of {dep.model.name} is not modelled; "
                          "drop --enable-migration")


def kv_offloading(dep: Any) -> None:
    """`--kv-offloading-size` and `--kv-offloading-backend` as vLLM takes them (hook: Deployment)."""
    if dep.kv_offloading_backend not in BACKENDS:
        raise ConfigError(f"kv_offloading_backend {dep.kv_offloading_backend!r} is not one of "
                          f"{', '.join(BACKENDS)}; give --kv-offloading-backend native or lmcache")
    if dep.kv_offloading_size is None:
        return
    number(dep.kv_offloading_size, "kv_offloading_size", above=0, fix="give GiB of host memory, e.g. 64")
    if dep.model.attention.num_sliding_layers:
        raise ConfigError(f"kv_offloading_size with the sliding-window layers of {dep.model.name} is not "
                          "modelled; drop --kv-offloading-size")
    if not dep.gpu.host_link_gbps:
        raise ConfigError(f"kv_offloading_size needs the host link of the GPU, which {dep.gpu.display_name} "
                          "does not record; pick a --gpu from the catalog")


def workload(spec: Any) -> None:
    """Ranges of a WorkloadSpec's numbers and its files' existence (hook: WorkloadSpec)."""
    if spec.arrival != "trace":
        request_count(spec.num_requests)
    number(spec.rate, "rate", above=0, allow_inf=True, fix="give requests per second, e.g. 2 (inf: all at once)")
    for name in ("cv", "burstiness"):
        if getattr(spec, name) is not None:
            number(getattr(spec, name), name, above=0)
    number(spec.think_time_s, "think_time_s", minimum=0, fix="give seconds between a user's requests, e.g. 0")
    number(spec.time_scale, "time_scale", above=0, fix="0.5 replays twice as fast")
    for name in ("trace", "lengths_file"):
        path = getattr(spec, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"{name} file not found: {path}; give an existing file")
    if spec.arrival != "trace" and not spec.lengths_file:
        from rllmsim.workload.draw import check_dataset

        for name in spec.dataset.split(","):
            check_dataset(name.partition(":")[0].strip())  # an unknown name is one line, before any run


# -- output locations ----------------------------------------------------------------------------

def writable_dir(path: str | Path, flag: str = "--out", need_bytes: int = 1 << 20) -> Path:
    """Refuse an output location before any work: its nearest existing ancestor must be a
    directory this process can create entries in (probed with a file, then removed), on a disk
    with room. Nothing is left behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} exists and is not a directory; choose a directory path")
    base = path
    while not base.exists():
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"{flag} {path}: {base} is not a directory; choose a path under a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".rllmsim-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{flag} {path}: cannot write under {base} ({err.strerror or err}); "
                          "choose a writable directory") from None
    try:
        free = shutil.disk_usage(base).free
    except OSError:
        free = need_bytes
    if free < need_bytes:
        raise ConfigError(f"{flag} {path}: only {free / 2**20:.1f} MiB free under {base}; free space or "
                          "choose another disk")
    return path


_STAGING = re.compile(r"^\..+\.pid(\d+)\..*\.tmp$")


def staging_prefix(name: str) -> str:
    """The prefix of a staging entry for `name`: it carries this process id so a later run can
    tell a killed writer's leftovers (dead pid) from a live one's."""
    return f".{name}.pid{os.getpid()}."


def clean_stale_staging(parent: Path) -> None:
    """Remove staging entries under `parent` whose writer process is gone (a SIGKILLed run)."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _STAGING.match(entry.name)
        if match and not _alive(int(match.group(1))):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def each(values: Iterable[Any], check, field: str) -> None:
    """`check(value, field)` for every value of a list flag or grid axis."""
    for value in values:
        check(value, field)


def kv_cache_dtype(value: Any, field: str = "kv_cache_dtype") -> str:
    """A KV-cache dtype vLLM knows; the error names the field, not just the dtype table."""
    from rllmsim.specs import dtype_bytes

    try:
        dtype_bytes(value)
    except ConfigError as err:
        raise ConfigError(f"{field}: {err}") from None
    return value


def quantization(value: Any, field: str = "quantization") -> str | None:
    from rllmsim.specs.dtypes import quantization_weight_bytes

    if value in (None, "", "none"):
        return None
    try:
        quantization_weight_bytes(value)
    except ConfigError as err:
        raise ConfigError(f"{field}: {err}") from None
    return value


def cost_model_arg(value: str, kinds: Iterable[str], field: str = "--cost-model") -> str:
    """A cost-model kind or a file that exists, told apart before anything is loaded."""
    if value not in kinds and not Path(value).is_file():
        raise ConfigError(f"{field} {value!r}: not one of {', '.join(kinds)} and no such calibration file; "
                          "give a kind or a path written by `rllmsim calibrate`")
    return value
