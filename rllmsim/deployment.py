"""`Deployment`: what is being served and how vLLM is configured, validated on construction.

The knobs carry vLLM's own names (`max_num_seqs`, `max_num_batched_tokens`,
`gpu_memory_utilization`, `block_size`, `kv_cache_dtype`, ...) so a user can paste the flags they
run today. Defaults follow `vllm serve`: on GPUs with at least 70 GiB that are not A100s it uses
8192 batched tokens and 1024 sequences, elsewhere 2048 and 256.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from rllmsim import checks, parallel, pipeline, spec_decode
from rllmsim.engine.acceptance import DEFAULT_ACCEPTANCE_SPREAD
from rllmsim.engine.kv_capacity import KVBudget, kv_budget
from rllmsim.engine.kv_layout import KVLayout, kv_layout
from rllmsim.engine.kv_offload import HOST_LINK_EFFICIENCY, OffloadConfig
from rllmsim.errors import ConfigError
from rllmsim.specs import GPUSpec, ModelSpec, dtype_bytes
from rllmsim.specs.dtypes import quantization_scope, quantization_weight_bytes

GIB = 1024**3
#: Checkpoint quantization methods vLLM runs as stored unless --quantization says otherwise.
CHECKPOINT_QUANTIZATIONS = ("fp8", "mxfp4", "nvfp4")
#: compressed-tensors layouts modelled, by the start of `checkpoint_quantization_format`: the rllmsim
#: method each one is (its bytes and scope in rllmsim.specs.dtypes).
COMPRESSED_TENSORS_LAYOUTS = {"int4 weights, group 32": "int4_wo"}
SPECULATIVE_METHODS = spec_decode.SPECULATIVE_METHODS
#: The vLLM release whose defaults a deployment takes unless told otherwise.
DEFAULT_VLLM_VERSION = "0.19.0"
#: First vLLM release with async scheduling on by default (vllm-project/vllm#27614, Jan 2026).
ASYNC_SCHEDULING_DEFAULT_SINCE = (0, 14)
#: First vLLM release with `scheduler_reserve_full_isl` (on by default; absent in 0.18): a waiting
#: request is admitted only when the KV cache holds its whole prompt (vllm-project/vllm#37307).
RESERVE_FULL_ISL_SINCE = (0, 19)


def checkpoint_method(model: ModelSpec) -> str | None:
    """The method vLLM runs a checkpoint with when --quantization is not given, in rllmsim's names;
    None for a bf16 checkpoint or a compressed-tensors layout not modelled (then it counts as bf16)."""
    method = model.checkpoint_quantization
    if method in CHECKPOINT_QUANTIZATIONS:
        return method
    if method == "compressed-tensors":
        fmt = model.checkpoint_quantization_format
        return next((name for prefix, name in COMPRESSED_TENSORS_LAYOUTS.items() if fmt.startswith(prefix)), None)
    return None


@dataclass(frozen=True)
class Deployment:
    """One serving configuration: model, hardware, parallelism and vLLM engine arguments."""

    model: ModelSpec
    gpu: GPUSpec
    tp: int = 1
    replicas: int = 1
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    scheduler_reserve_full_isl: bool | None = None  # None: as the vLLM version does (on from 0.19)
    num_gpu_blocks_override: int | None = None
    speculative_method: str | None = None
    num_speculative_tokens: int = 0
    spec_acceptance_rate: float | None = None  # vLLM's "Draft acceptance rate"; None: 0.7 unless the length is given
    spec_mean_acceptance_length: float | None = None  # vLLM's "Mean acceptance length" (1 + rate x k)
    spec_acceptance_spread: float = DEFAULT_ACCEPTANCE_SPREAD  # per-request variation (rllmsim.engine.acceptance)
    draft_model: ModelSpec | None = None
    vllm_version: str = DEFAULT_VLLM_VERSION
    async_scheduling: bool | None = None  # None: the vLLM version's default
    enforce_eager: bool = False
    disable_custom_all_reduce: bool = False
    enable_expert_parallel: bool = False  # MoE experts sharded over the DP x TP ranks instead of split
    data_parallel_size: int = 1  # engine cores per replica, each with its own TP group (rllmsim.parallel)
    pipeline_parallel_size: int = 1  # stages per engine core, each on its own TP group (rllmsim.pipeline)
    kv_offloading_size: float | None = None  # GiB of host memory for KV, over all the replica's GPUs
    kv_offloading_backend: str = "native"  # vLLM's native offloading connector, or LMCache
    enable_migration: bool = False  # Llumnix-style live migration between replicas (rllmsim.engine.migration)
    migration_interval_s: float = 0.1  # how often the migration policy looks at the replicas

    def __post_init__(self) -> None:
        _require(self.tp >= 1 and self.tp & (self.tp - 1) == 0, "tp", f"must be a power of two, got {self.tp}")
        _require(self.replicas >= 1, "replicas", f"must be >= 1, got {self.replicas}")
        parallel.check(self)
        _require(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization",
                 f"must be in (0, 1], got {self.gpu_memory_utilization}")
        _require(self.block_size in (1, 8, 16, 32, 64, 128), "block_size",
                 f"must be one of 1, 8, 16, 32, 64, 128, got {self.block_size}")
        _require(self.model.num_kv_heads % self.tp == 0 or self.tp % self.model.num_kv_heads == 0,
                 "tp", f"{self.tp} does not divide the {self.model.num_kv_heads} KV heads of {self.model.name}")
        if self.quantization is None:
            # vLLM reads the method from the checkpoint's quantization_config (DeepSeek-R1,
            # MiniMax-M2: fp8; gpt-oss: mxfp4 experts; Kimi-K2-Thinking: int4 experts)
            object.__setattr__(self, "quantization", checkpoint_method(self.model))
        quantization_weight_bytes(self.quantization)  # raises ConfigError for unknown names
        checks.kv_cache_dtype(self.kv_cache_dtype)  # raises ConfigError for unknown names
        spec_decode.check_speculative(self)
        _require(not self.enable_expert_parallel or self.model.num_experts > 0, "enable_expert_parallel",
                 f"needs a mixture-of-experts model; {self.model.name} is dense")
        version = parse_vllm_version(self.vllm_version)
        pipeline.check(self)
        checks.kv_offloading(self)
        checks.migration(self)
        if self.async_scheduling is None:
            object.__setattr__(self, "async_scheduling", version >= ASYNC_SCHEDULING_DEFAULT_SINCE
                               and self.pipeline_parallel_size == 1)
        if self.scheduler_reserve_full_isl is None:
            object.__setattr__(self, "scheduler_reserve_full_isl", version >= RESERVE_FULL_ISL_SINCE)
        large_gpu = self.gpu.hbm_gib >= 70 and not self.gpu.name.startswith("a100")
        defaults = {
            "max_num_seqs": 1024 if large_gpu else 256,
            "max_num_batched_tokens": 8192 if large_gpu else 2048,
            "max_model_len": self.model.max_position_embeddings,
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len"):
            _require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        if not self.enable_chunked_prefill:
            _require(self.max_num_batched_tokens >= self.max_model_len, "max_num_batched_tokens",
                     f"{self.max_num_batched_tokens} < max_model_len {self.max_model_len} without chunked "
                     "prefill; raise it or lower --max-model-len")
        checks.deployment(self)
        self._check_fits()

    @property
    def spec_tokens_per_step(self) -> float:
        """Mean tokens a decoding sequence emits per step: 1 + rate x k (`rllmsim.spec_decode`)."""
        return spec_decode.tokens_per_step(self)

    @property
    def drafter(self) -> ModelSpec | None:
        """The model that proposes tokens on the GPU; None for n-gram lookup (`rllmsim.spec_decode`)."""
        return spec_decode.drafter(self)

    # -- memory -----------------------------------------------------------------------------
    @property
    def weight_bytes_per_param(self) -> float:
        return quantization_weight_bytes(self.quantization)

    @property
    def weight_bytes_per_gpu(self) -> float:
        """Weights (and a speculative drafter's, `rllmsim.spec_decode`) split evenly across the TP group;
        with data parallelism the routed experts across all DP x TP GPUs (`rllmsim.parallel`); with
        pipeline parallelism those of the fullest stage (`rllmsim.pipeline`)."""
        return pipeline.weight_bytes_per_gpu(self, self.weight_bytes_per_tp_gpu)

    @property
    def weight_bytes_per_tp_gpu(self) -> float:
        """`weight_bytes_per_gpu` as if one TP group held every layer: the bytes one step reads
        per TP rank, which pipeline stages share out among them."""
        model_bytes = self.model.weight_bytes(self.weight_bytes_per_param, quantization_scope(self.quantization))
        return parallel.weight_bytes_per_gpu(self, model_bytes + self._drafter_weight_bytes())

    def _drafter_weight_bytes(self) -> float:
        return spec_decode.drafter_weight_bytes(self)

    @property
    def kv_bytes_per_token_per_gpu(self) -> float:
        """The target model's KV bytes per token on one TP group's GPU over all layers (what its
        attention reads per step; with pipeline parallelism the stages' GPUs share them out)."""
        return self._kv_bytes_per_token(self.model)

    @property
    def drafter_kv_bytes_per_token_per_gpu(self) -> float:
        """A speculative drafter's KV bytes per token on one GPU: its attention layers are layers of
        the same engine, and vLLM gives them blocks of the same pool (the model runner's KV cache
        spec lists every attention layer, the drafter's included). 0 for n-gram lookup, and for a
        hybrid sliding-window target, whose drafter layers would change vLLM's grouping (not
        modelled: those runs count the target's layers only)."""
        drafter = self.drafter
        if drafter is None or self.kv_layout.hybrid:
            return 0.0
        return self._kv_bytes_per_token(drafter)

    def _kv_bytes_per_token(self, model: ModelSpec) -> float:
        """KV heads are split across TP ranks; with more ranks than KV heads they are replicated.
        An MLA latent is not split: every TP rank keeps the whole latent, as vLLM does."""
        if model.attention.is_mla:
            return model.kv_bytes_per_token(dtype_bytes(self.kv_cache_dtype))
        kv_heads_per_gpu = max(1, model.num_kv_heads // self.tp)
        per_head = model.kv_bytes_per_token(dtype_bytes(self.kv_cache_dtype)) / model.num_kv_heads
        return per_head * kv_heads_per_gpu

    @property
    def kv_layout(self) -> KVLayout:
        """How the layers share the block pool: one group of every layer, or vLLM's hybrid
        groups when some layers slide (`rllmsim.engine.kv_layout`)."""
        return kv_layout(self.model, self.block_size, self.max_num_batched_tokens, self.max_model_len)

    @property
    def kv_block_bytes(self) -> float:
        """Bytes of one pool block per GPU: `block_size` tokens of the layers one block holds
        (all of them, or one hybrid group's, or with pipeline parallelism those of the stage
        with the most layers), and the drafter's layers beside them."""
        layout = self.kv_layout
        per_token = self.kv_bytes_per_token_per_gpu
        if layout.hybrid:
            per_token = per_token * layout.layers_per_block / self.model.num_layers
        elif self.pipeline_parallel_size > 1:
            per_token = per_token * pipeline.max_stage_layers(self) / self.model.num_layers
        return self.block_size * (per_token + self.drafter_kv_bytes_per_token_per_gpu)

    def max_request_blocks(self, tokens: int) -> int:
        """Pool blocks one request of up to `tokens` tokens may need at once, as vLLM's start-up
        check counts them (`max_memory_usage_bytes`): all its full-attention blocks plus, per
        sliding group, a window and a step's worth of tokens (the admission cap)."""
        layout = self.kv_layout
        return self.blocks_for(tokens) + (layout.window_reserve(tokens) if layout.hybrid else 0)

    @property
    def offload_config(self) -> OffloadConfig | None:
        """The CPU KV tier of each engine core (`rllmsim.engine.kv_offload`), None without one:
        `kv_offloading_size` holds blocks of every GPU's share (vLLM sizes it over all TP ranks),
        and each GPU loads its share over its own host link."""
        if self.kv_offloading_size is None:
            return None
        gpus = self.tp * self.pipeline_parallel_size
        replica_block = self.kv_block_bytes * gpus
        return OffloadConfig(
            backend=self.kv_offloading_backend, block_size=self.block_size,
            capacity_blocks=int(self.kv_offloading_size * GIB // replica_block),
            load_s_per_block=self.kv_block_bytes / (self.gpu.host_link_gbps * 1e9 * HOST_LINK_EFFICIENCY),
            bytes_per_block=replica_block)

    @property
    def kv_budget(self) -> KVBudget:
        """vLLM v1's start-up memory sum per GPU, term by term (rllmsim.engine.kv_capacity)."""
        return kv_budget(self)

    @property
    def kv_budget_bytes(self) -> float:
        return self.kv_budget.available

    @property
    def num_gpu_blocks(self) -> int:
        """KV blocks per engine core (per DP rank): the override when given, else vLLM's `available // bytes_per_block`."""
        if self.num_gpu_blocks_override is not None:
            return int(self.num_gpu_blocks_override)
        return int(self.kv_budget_bytes // self.kv_block_bytes)

    @property
    def kv_capacity_source(self) -> str:
        if self.num_gpu_blocks_override is not None:
            return "num_gpu_blocks_override"
        return "derived from memory as vLLM v1 profiles it"

    @property
    def engine_cores(self) -> int:
        """Engine cores (schedulers with their own KV pool) in all: replicas x data_parallel_size."""
        return self.replicas * self.data_parallel_size

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pipeline_parallel_size * self.data_parallel_size

    def blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_size)

    def _check_fits(self) -> None:
        if self.num_gpu_blocks_override is None:
            budget = self.kv_budget
            if budget.available <= 0:
                raise ConfigError(
                    f"{self.model.name} does not fit on {self.gpu.name} at tp={self.tp}: weights, activations "
                    f"and runtime need {budget.non_kv / GIB:.1f} GiB per GPU but gpu_memory_utilization gives "
                    f"{budget.requested / GIB:.1f} GiB (short by {-budget.available / GIB:.1f} GiB); raise --tp or "
                    "--pipeline-parallel-size, quantize, or pick a larger GPU")
        _require(self.num_gpu_blocks >= 1, "num_gpu_blocks", "must be >= 1")
        if self.max_request_blocks(self.max_model_len) > self.num_gpu_blocks:
            max_tokens = self._longest_request_that_fits()
            raise ConfigError(
                f"max_model_len {self.max_model_len} exceeds the {max_tokens} tokens the KV cache holds "
                f"({self.num_gpu_blocks} blocks of {self.block_size}); lower --max-model-len to at most "
                f"{max_tokens} or give the KV cache more memory")

    def _longest_request_that_fits(self) -> int:
        tokens = self.num_gpu_blocks * self.block_size
        if self.kv_layout.hybrid:
            tokens -= self.block_size * (self.max_request_blocks(tokens) - self.num_gpu_blocks)
        return max(tokens, 0)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, flat and JSON-ready, for summaries and sweep tables."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = self.model.name
        out["draft_model"] = self.draft_model.name if self.draft_model else None
        out["gpu"] = self.gpu.name
        out["num_gpu_blocks"] = self.num_gpu_blocks
        out["kv_capacity_source"] = self.kv_capacity_source
        out["weight_gib_per_gpu"] = round(self.weight_bytes_per_gpu / GIB, 3)
        out["kv_bytes_per_token_per_gpu"] = self.kv_bytes_per_token_per_gpu
        if self.drafter_kv_bytes_per_token_per_gpu:
            out["drafter_kv_bytes_per_token_per_gpu"] = self.drafter_kv_bytes_per_token_per_gpu
        layout = self.kv_layout
        if layout.hybrid:
            out["kv_layers_per_block"] = layout.layers_per_block
            out["kv_sliding_groups"] = layout.sliding_groups
        return out


def parse_vllm_version(text: str) -> tuple[int, int]:
    """(major, minor) of a vLLM version string such as "0.19.0" or "0.14.0rc2"."""
    match = re.match(r"^v?(\d+)\.(\d+)", str(text).strip())
    if not match:
        raise ConfigError(f"vllm_version {text!r} is not a version like 0.19.0; give --vllm-version MAJOR.MINOR[.PATCH]")
    return int(match.group(1)), int(match.group(2))


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field} {message}")
