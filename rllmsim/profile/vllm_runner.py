"""Builds the in-process vLLM engine, captures what each step computes, and runs a profile.

`run_profile` starts an `LLMEngine` in-process and hands it to `driver.Driver`, which controls
admission so the engine walks through the planned shapes, one `step()` at a time. What a step
actually computed is read from the scheduler's own output (`SchedulerOutput`: tokens scheduled
per request and the tokens each had computed before), captured by wrapping
`Scheduler.schedule` on this engine instance; the features of every row therefore come from the
shared `StepFeatures.from_shapes`, exactly as the simulator computes them. vLLM's per-step
`SchedulerStats` (running, waiting, KV usage, and its own per-iteration context/generation token
counts, used as a cross-check) arrive through a `StatLoggerBase` subclass passed as
`stat_loggers`. Wall time is `time.perf_counter()` around `LLMEngine.step()`.

This module and `driver.py` are the only ones that import vllm, lazily, inside functions.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from rllmsim.cost.features import BatchShape, StepFeatures
from rllmsim.cost.profile_table import step_kind
from rllmsim.errors import ConfigError
from rllmsim.profile import contention
from rllmsim.profile.metadata import (
    describe_device, describe_host, model_shape, read_local_config, relevant_env, resolve_model)
from rllmsim.profile.plan import ProfilePlan
from rllmsim.profile.writer import ProfileWriter

MISSING_VLLM = ("vllm is not installed: install rllmsim[profile] on a GPU host or "
                "rllmsim[profile-cpu] here")


def import_vllm():
    """Import vllm on demand; a missing install is a user mistake, not a bug."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core must run in-process
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"{MISSING_VLLM} ({err})") from None
    return vllm


@dataclass
class EngineSettings:
    """The engine knobs a profile is taken with, by their vLLM names where they have one.

    dtype "auto" means float32 on CPU (the CPU backend's dependable path) and the model's own
    dtype on GPU. enforce_eager None means True on CPU, False (CUDA graphs) on GPU.
    """

    model: str
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    block_size: int | None = None
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    max_model_len: int | None = None
    kv_cache_memory_bytes: int | None = None
    gpu_memory_utilization: float | None = None
    enforce_eager: bool | None = None
    load_format: str = "dummy"
    seed: int = 0
    temperature: float = 0.6
    top_p: float = 0.95
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProfileResult:
    parquet_path: Any
    json_path: Any
    steps: int
    wall_s: float
    status: str


# ----- engine construction ---------------------------------------------------------------------
def _engine_args(settings: EngineSettings, is_cpu: bool) -> dict[str, Any]:
    from vllm import EngineArgs

    dtype = settings.dtype
    if dtype == "auto" and is_cpu:
        dtype = "float32"
    eager = settings.enforce_eager if settings.enforce_eager is not None else is_cpu
    args: dict[str, Any] = {
        "model": settings.model,
        "load_format": settings.load_format,
        "dtype": dtype,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "kv_cache_dtype": settings.kv_cache_dtype,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "max_num_seqs": settings.max_num_seqs,
        "enforce_eager": eager,
        "enable_prefix_caching": False,
        "enable_chunked_prefill": True,
        "async_scheduling": False,  # step() must return this step's outputs, not the last one's
        "skip_tokenizer_init": True,  # prompts are token ids; no tokenizer is ever needed
        "disable_log_stats": False,
        "enable_logging_iteration_details": True,
        "seed": settings.seed,
    }
    for key in ("block_size", "max_model_len", "kv_cache_memory_bytes", "gpu_memory_utilization"):
        if getattr(settings, key) is not None:
            args[key] = getattr(settings, key)
    args.update(settings.extra)
    known = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(k for k in settings.extra if k not in known)
    if unknown:
        raise ConfigError(f"this vLLM's EngineArgs has no field(s) {', '.join(unknown)}")
    # Optional knobs an older vLLM may lack: drop them rather than fail.
    return {k: v for k, v in args.items() if k in known}


def _make_stats_logger(sink: list):
    from vllm.v1.metrics.loggers import StatLoggerBase

    class StepStatsLogger(StatLoggerBase):
        """Keeps each step's SchedulerStats for the runner to read after `step()`."""

        def __init__(self, vllm_config, engine_index: int = 0):
            self.engine_index = engine_index

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
            if scheduler_stats is not None:
                sink.append(scheduler_stats)

        def log_engine_initialized(self):
            pass

    return StepStatsLogger


def build_engine(settings: EngineSettings, stats_sink: list):
    """Create the in-process engine; returns (engine, engine_args dict, is_cpu)."""
    import_vllm()
    from vllm import EngineArgs
    from vllm.platforms import current_platform

    try:
        from vllm.v1.engine.llm_engine import LLMEngine
    except ImportError:  # pragma: no cover - very old layouts
        from vllm import LLMEngine

    is_cpu = bool(current_platform.is_cpu())
    args = _engine_args(settings, is_cpu)
    engine = LLMEngine.from_engine_args(EngineArgs(**args),
                                        stat_loggers=[_make_stats_logger(stats_sink)])
    return engine, args, is_cpu


def engine_core(engine):
    client = getattr(engine, "engine_core", None)
    core = getattr(client, "engine_core", None)
    if core is None or not hasattr(core, "scheduler"):
        raise ConfigError("the vLLM engine core runs out of process; the profiler needs "
                          "VLLM_ENABLE_V1_MULTIPROCESSING=0")
    if getattr(core, "batch_queue", None) is not None:
        raise ConfigError("the engine uses a batch queue (async scheduling or pipeline "
                          "parallelism); profile with async_scheduling=False and pp=1")
    return core


# ----- per-step capture ------------------------------------------------------------------------
class StepRecorder:
    """Wraps `scheduler.schedule` on one engine to read what each step computes."""

    def __init__(self, scheduler, num_gpu_blocks: int):
        self.scheduler = scheduler
        self.usable_blocks = num_gpu_blocks - 1
        self._schedule = scheduler.schedule
        scheduler.schedule = self._capture
        self.captured: dict[str, Any] | None = None

    def _capture(self, *args, **kwargs):
        out = self._schedule(*args, **kwargs)
        self.captured = self._describe(out)
        return out

    def _free_blocks(self) -> int | None:
        manager = getattr(self.scheduler, "kv_cache_manager", None)
        pool = getattr(manager, "block_pool", None)
        if pool is not None:
            return int(pool.get_num_free_blocks())
        usage = getattr(manager, "usage", None)
        return None if usage is None else round((1 - usage) * self.usable_blocks)

    def _describe(self, out) -> dict[str, Any]:
        computed = {r.req_id: r.num_computed_tokens for r in out.scheduled_new_reqs}
        cached = out.scheduled_cached_reqs
        computed.update(zip(cached.req_ids, cached.num_computed_tokens))
        spec = getattr(out, "scheduled_spec_decode_tokens", {}) or {}
        chunks: list[tuple[int, int]] = []
        decode_ctx: list[int] = []
        decode_tokens = 0
        for rid, n in out.num_scheduled_tokens.items():
            before = int(computed[rid])
            prompt = int(self.scheduler.requests[rid].num_prompt_tokens)
            if before >= prompt and n <= 1 + len(spec.get(rid, ())):
                decode_ctx.append(before)
                decode_tokens += int(n)
            else:
                chunks.append((int(n), before))
        free = self._free_blocks()
        return {
            "chunks": chunks,
            "decode_contexts": decode_ctx,
            "decode_tokens": decode_tokens,
            "scheduled_tokens": int(out.total_num_scheduled_tokens),
            "kv_blocks_used": -1 if free is None else self.usable_blocks - free,
            "sched_running": len(self.scheduler.running),
            "sched_waiting": len(self.scheduler.waiting),
            "resumed_seqs": len(getattr(cached, "resumed_req_ids", ()) or ()),
        }

    def take(self) -> dict[str, Any] | None:
        captured, self.captured = self.captured, None
        return captured


def step_row(captured: dict[str, Any], stats) -> dict[str, Any]:
    """One profile row from what was scheduled and what vLLM reported for the step."""
    chunks = captured["chunks"]
    decode = captured["decode_contexts"]
    shape = BatchShape(prefill_chunks=tuple(chunks), decode_contexts=tuple(decode))
    feats = StepFeatures.from_shapes([shape]).as_dict()
    row: dict[str, Any] = {k: int(v[0]) for k, v in feats.items()}
    row["decode_tokens"] = captured["decode_tokens"]  # differs from decode_seqs only with spec
    row["kind"] = step_kind(row["prefill_seqs"], row["decode_seqs"])
    decode_arr = np.asarray(decode, dtype=np.int64)
    row.update({
        "scheduled_tokens": captured["scheduled_tokens"],
        "prefill_ctx_sum": int(sum(ctx for _, ctx in chunks)),
        "decode_kv_sq_sum": int((decode_arr ** 2).sum()),
        "decode_ctx_max": int(decode_arr.max()) if len(decode_arr) else 0,
        "prefill_chunk_tokens": [c for c, _ in chunks],
        "prefill_chunk_contexts": [ctx for _, ctx in chunks],
        "decode_contexts": list(decode),
        "kv_blocks_used": captured["kv_blocks_used"],
        "sched_running": captured["sched_running"],
        "sched_waiting": captured["sched_waiting"],
        "resumed_seqs": captured["resumed_seqs"],
    })
    details = getattr(stats, "iteration_details", None) if stats is not None else None
    row.update({
        "running": int(stats.num_running_reqs) if stats is not None else -1,
        "waiting": int(stats.num_waiting_reqs) if stats is not None else -1,
        "kv_cache_usage": float(stats.kv_cache_usage) if stats is not None else float("nan"),
        "vllm_iteration_s": details.elapsed_ms / 1000.0 if details is not None else float("nan"),
        "vllm_ctx_tokens": int(details.num_ctx_tokens) if details is not None else -1,
        "vllm_gen_tokens": int(details.num_generation_tokens) if details is not None else -1,
    })
    return row


def _sigterm_as_interrupt():
    """Make SIGTERM raise KeyboardInterrupt (main thread only); returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


# ----- entry point -----------------------------------------------------------------------------
def run_profile(plan: ProfilePlan, settings: EngineSettings, out_dir, name: str,
                log: Callable[[str], None] = print, command: str | None = None,
                quiet_timeout_s: float = 0.0, quiet_cores: float = 0.5) -> ProfileResult:
    """Profile one engine over `plan`; writes `<out_dir>/<name>.parquet` and `.json`.

    quiet_timeout_s > 0: before each cell and each re-measurement, wait up to that long for
    other processes to use fewer than `quiet_cores` cores (for shared hosts). SIGTERM, like
    Ctrl-C, ends the run with the steps measured so far kept ("status": "interrupted")."""
    model_name, model_dir = resolve_model(settings.model)
    if model_dir is not None:
        settings = dataclasses.replace(settings, model=str(model_dir))
    if settings.max_model_len is not None:
        plan.check_engine_limits(settings.max_num_seqs, settings.max_model_len,
                                 settings.max_num_batched_tokens)
    vllm = import_vllm()

    sink: list = []
    t_start = time.perf_counter()
    log(f"starting vLLM {vllm.__version__} engine for {model_name} ...")
    engine, engine_args, is_cpu = build_engine(settings, sink)
    init_s = time.perf_counter() - t_start
    cfg = engine.vllm_config
    num_gpu_blocks, block_size = int(cfg.cache_config.num_gpu_blocks), int(cfg.cache_config.block_size)
    max_model_len = int(engine.model_config.max_model_len)
    plan.check_engine_limits(settings.max_num_seqs, max_model_len, settings.max_num_batched_tokens)
    plan.check_fits_pool(num_gpu_blocks, block_size, settings.max_num_batched_tokens)

    config = read_local_config(model_dir) or engine.model_config.hf_config.to_dict()
    dtype = str(engine.model_config.dtype).replace("torch.", "")
    kv_dtype = str(cfg.cache_config.cache_dtype)
    writer = ProfileWriter(out_dir, name)
    writer.update_metadata(
        status="running",
        model=model_name,
        model_path=settings.model,
        model_config=config,
        model_shape=model_shape(config),
        dtype=dtype,
        tp=int(cfg.parallel_config.tensor_parallel_size),
        kv_cache_dtype=kv_dtype,
        kv_cache_dtype_resolved=dtype if kv_dtype == "auto" else kv_dtype,
        block_size=block_size,
        num_gpu_blocks=num_gpu_blocks,
        kv_cache_tokens=(num_gpu_blocks - 1) * block_size,
        max_num_batched_tokens=int(cfg.scheduler_config.max_num_batched_tokens),
        max_num_seqs=int(cfg.scheduler_config.max_num_seqs),
        max_model_len=max_model_len,
        enforce_eager=bool(engine_args.get("enforce_eager")),
        async_scheduling=False,
        enable_prefix_caching=False,
        load_format=settings.load_format,
        sampling={"temperature": settings.temperature, "top_p": settings.top_p},
        engine_args=engine_args,
        vllm_version=vllm.__version__,
        device=describe_device(is_cpu),
        **describe_host(),
        env=relevant_env(),
        plan=plan.to_dict(),
        engine_init_s=round(init_s, 3),
        contention=contention.rule(),
        command=command,
    )
    writer.flush()
    log(f"engine ready in {init_s:.1f}s: {num_gpu_blocks} KV blocks of {block_size} tokens; "
        f"grid {len(plan.prefill_cells())} prefill + {len(plan.decode_cells())} decode cells, "
        f"~{plan.planned_steps()['total']} measured steps")
    from rllmsim.profile.driver import Driver

    driver = Driver(engine, plan, settings, writer, sink, log, quiet_timeout_s=quiet_timeout_s,
                    quiet_cores=quiet_cores)
    status = "failed"
    t_run = time.perf_counter()
    previous = _sigterm_as_interrupt()
    try:
        driver.run()
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        writer.update_metadata(profile_wall_s=round(time.perf_counter() - t_run, 3),
                               total_wall_s=round(time.perf_counter() - t_start, 3),
                               vllm_token_count_mismatches=driver.mismatches,
                               contended_steps=driver.contended_steps,
                               quiet_wait_s=round(driver.quiet_wait_s, 3))
        writer.close(status)
        log(f"{status}: {len(writer.rows)} steps in {writer.parquet_path}")
    return ProfileResult(writer.parquet_path, writer.json_path, len(writer.rows),
                         time.perf_counter() - t_run, status)
