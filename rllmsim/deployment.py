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

from rllmsim import parallel
from rllmsim.engine.kv_capacity import KVBudget, kv_budget
from rllmsim.errors import ConfigError
from rllmsim.specs import GPUSpec, ModelSpec, dtype_bytes
from rllmsim.specs.dtypes import quantization_weight_bytes

GIB = 1024**3
SPECULATIVE_METHODS = ("ngram", "draft", "eagle")
#: The vLLM release whose defaults a deployment takes unless told otherwise.
DEFAULT_VLLM_VERSION = "0.19.0"
#: First vLLM release with async scheduling on by default (vllm-project/vllm#27614, Jan 2026).
ASYNC_SCHEDULING_DEFAULT_SINCE = (0, 14)
#: First vLLM release with `scheduler_reserve_full_isl` (on by default; absent in 0.18): a waiting
#: request is admitted only when the KV cache holds its whole prompt (vllm-project/vllm#37307).
RESERVE_FULL_ISL_SINCE = (0, 19)


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
    spec_acceptance_rate: float = 0.7
    draft_model: ModelSpec | None = None
    vllm_version: str = DEFAULT_VLLM_VERSION
    async_scheduling: bool | None = None  # None: the vLLM version's default
    enforce_eager: bool = False
    disable_custom_all_reduce: bool = False
    enable_expert_parallel: bool = False  # MoE experts sharded over the DP x TP ranks instead of split
    data_parallel_size: int = 1  # engine cores per replica, each with its own TP group (rllmsim.parallel)

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
        if self.quantization is None and self.model.checkpoint_quantization == "fp8":
            # vLLM reads the method from the checkpoint's quantization_config (DeepSeek-R1, MiniMax-M2)
            object.__setattr__(self, "quantization", "fp8")
        quantization_weight_bytes(self.quantization)  # raises ConfigError for unknown names
        dtype_bytes(self.kv_cache_dtype)  # raises ConfigError for unknown names
        self._check_speculative()
        _require(not self.enable_expert_parallel or self.model.num_experts > 0, "enable_expert_parallel",
                 f"needs a mixture-of-experts model; {self.model.name} is dense")
        version = parse_vllm_version(self.vllm_version)
        if self.async_scheduling is None:
            object.__setattr__(self, "async_scheduling", version >= ASYNC_SCHEDULING_DEFAULT_SINCE)
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
        self._check_fits()

    def _check_speculative(self) -> None:
        method = self.speculative_method
        if method is None:
            _require(self.num_speculative_tokens == 0, "num_speculative_tokens",
                     "needs --speculative-method ngram|draft|eagle")
            return
        _require(method in SPECULATIVE_METHODS, "speculative_method",
                 f"{method!r} is not one of {', '.join(SPECULATIVE_METHODS)}")
        _require(1 <= self.num_speculative_tokens <= 16, "num_speculative_tokens",
                 f"must be in 1..16 with --speculative-method, got {self.num_speculative_tokens}")
        _require(0.0 <= self.spec_acceptance_rate <= 1.0, "spec_acceptance_rate",
                 f"must be in [0, 1], got {self.spec_acceptance_rate}")
        _require((method == "draft") == (self.draft_model is not None), "draft_model",
                 "is required with --speculative-method draft (and only then); give --draft-model NAME")

    @property
    def spec_tokens_per_step(self) -> float:
        """Expected tokens a decoding sequence emits per step: 1 without speculation, else
        (1 - a^(k+1)) / (1 - a) for acceptance rate a and k proposed tokens."""
        k, a = self.num_speculative_tokens, self.spec_acceptance_rate
        if not self.speculative_method:
            return 1.0
        return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)

    @property
    def drafter(self) -> ModelSpec | None:
        """The model that proposes tokens on the GPU: the draft model, or for EAGLE a one-layer
        head of the target's shape; n-gram lookup runs on the CPU and has none."""
        if self.speculative_method == "draft":
            return self.draft_model
        if self.speculative_method == "eagle":
            return dataclasses.replace(self.model, num_layers=1, name=f"{self.model.name}-eagle-head")
        return None

    # -- memory -----------------------------------------------------------------------------
    @property
    def weight_bytes_per_param(self) -> float:
        return quantization_weight_bytes(self.quantization)

    @property
    def weight_bytes_per_gpu(self) -> float:
        """Weights (and a speculative drafter's, kept in bf16) split evenly across the TP group;
        with data parallelism the routed experts across all DP x TP GPUs (`rllmsim.parallel`)."""
        total = self.model.weight_bytes(self.weight_bytes_per_param) + self._drafter_weight_bytes()
        return parallel.weight_bytes_per_gpu(self, total)

    def _drafter_weight_bytes(self) -> float:
        """A draft model's full weights; an EAGLE head's one decoder layer (it shares the target's
        embeddings and lm_head)."""
        if self.speculative_method == "draft":
            return self.draft_model.weight_bytes(2.0)
        if self.speculative_method == "eagle":
            headless = dataclasses.replace(self.model, num_layers=0, num_moe_layers=0)
            return (self.model.weight_bytes(2.0) - headless.weight_bytes(2.0)) / self.model.num_layers
        return 0.0

    @property
    def kv_bytes_per_token_per_gpu(self) -> float:
        """KV heads are split across TP ranks; with more ranks than KV heads they are replicated.
        An MLA latent is not split: every TP rank keeps the whole latent, as vLLM does."""
        if self.model.attention.is_mla:
            return self.model.kv_bytes_per_token(dtype_bytes(self.kv_cache_dtype))
        kv_heads_per_gpu = max(1, self.model.num_kv_heads // self.tp)
        per_head = self.model.kv_bytes_per_token(dtype_bytes(self.kv_cache_dtype)) / self.model.num_kv_heads
        return per_head * kv_heads_per_gpu

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
        return int(self.kv_budget_bytes // (self.block_size * self.kv_bytes_per_token_per_gpu))

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
        return self.tp * self.data_parallel_size

    def blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.block_size)

    def _check_fits(self) -> None:
        if self.num_gpu_blocks_override is None:
            budget = self.kv_budget
            if budget.available <= 0:
                raise ConfigError(
                    f"{self.model.name} does not fit on {self.gpu.name} at tp={self.tp}: weights, activations "
                    f"and runtime need {budget.non_kv / GIB:.1f} GiB per GPU but gpu_memory_utilization gives "
                    f"{budget.requested / GIB:.1f} GiB (short by {-budget.available / GIB:.1f} GiB); raise --tp, "
                    "quantize, or pick a larger GPU")
        _require(self.num_gpu_blocks >= 1, "num_gpu_blocks", "must be >= 1")
        max_tokens = self.num_gpu_blocks * self.block_size
        if self.max_model_len > max_tokens:
            raise ConfigError(
                f"max_model_len {self.max_model_len} exceeds the {max_tokens} tokens the KV cache holds "
                f"({self.num_gpu_blocks} blocks of {self.block_size}); lower --max-model-len to at most "
                f"{max_tokens} or give the KV cache more memory")

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
