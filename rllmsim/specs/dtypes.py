"""Bytes per element for the dtypes and quantization schemes vLLM is launched with.

Two different questions, two tables:

* `dtype_bytes` answers "how many bytes does one element of this tensor take" for the names
  vLLM accepts in `--dtype` and `--kv-cache-dtype` ("auto", "bfloat16", "fp8_e4m3", ...).
* `QUANTIZATION_WEIGHT_BYTES` answers "how many bytes does one *linear-layer weight* take on
  average" for the names vLLM accepts in `--quantization`. Group-wise int4 schemes store
  per-group scales (and zero points) beside the packed weights, so their average is a little
  above 0.5 bytes; we model that overhead explicitly instead of rounding it away, because for a
  70B model the difference (~1.3 GB) decides whether a deployment fits.

Embeddings, lm_head, norms and the MoE router are not quantized by vLLM; `ModelSpec.weight_bytes`
keeps them at 2 bytes (see rllmsim.specs.models). Some methods compress less than every linear
weight: `QUANTIZATION_SCOPE` says which (MXFP4 checkpoints such as gpt-oss quantize the routed
experts only and keep attention in bf16; so does Kimi-K2-Thinking's compressed-tensors int4,
`int4_wo`). NVFP4 (`nvfp4`, vLLM's `modelopt_fp4`) quantizes every linear inside the layers.
"""

from __future__ import annotations

from rllmsim.errors import ConfigError

# --dtype / --kv-cache-dtype names. "auto" means "as the checkpoint is stored"; every catalog
# model ships bfloat16 weights, and vLLM's auto KV dtype follows the model dtype, so 2 bytes.
_DTYPE_BYTES: dict[str, float] = {
    "auto": 2.0,
    "bfloat16": 2.0,
    "bf16": 2.0,
    "float16": 2.0,
    "fp16": 2.0,
    "half": 2.0,
    "float32": 4.0,
    "fp32": 4.0,
    "float": 4.0,
    "fp8": 1.0,
    "fp8_e4m3": 1.0,
    "fp8_e5m2": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

# Group-wise int4 (AWQ and GPTQ as published by Qwen/TheBloke/etc.): 4-bit packed weights, one
# fp16 scale and one 4-bit packed zero point per group of 128 input channels.
# AWQ stores `qzeros` packed eight to an int32 (4 bits each); GPTQ likewise packs `qzeros`
# (symmetric GPTQ still ships them). `g_idx` (GPTQ act-order) is one int32 per *input row*, i.e.
# per row not per weight, and is negligible (< 0.1%) for hidden sizes >= 1536, so it is left out.
INT4_GROUP_SIZE = 128
INT4_SCALE_BITS = 16
INT4_ZERO_BITS = 4
INT4_EFFECTIVE_BITS = 4 + (INT4_SCALE_BITS + INT4_ZERO_BITS) / INT4_GROUP_SIZE  # 4.15625
INT4_GROUPWISE_BYTES = INT4_EFFECTIVE_BITS / 8  # 0.51953125 bytes per weight

# OCP microscaling FP4 (MXFP4, gpt-oss): 4-bit e2m1 weights and one 8-bit e8m0 scale per block of
# 32, kept as such in memory by vLLM's MXFP4 MoE kernels (triton, marlin, flashinfer).
MXFP4_BLOCK = 32
MXFP4_EFFECTIVE_BITS = 4 + 8 / MXFP4_BLOCK  # 4.25
MXFP4_BYTES = MXFP4_EFFECTIVE_BITS / 8  # 0.53125 bytes per weight

# NVIDIA FP4 (NVFP4, ModelOpt checkpoints such as nvidia/DeepSeek-R1-FP4, vLLM's `modelopt_fp4`):
# 4-bit e2m1 weights and one FP8 e4m3 scale per block of 16, plus one fp32 scale per tensor (a few
# bytes per matrix, left out like fp8's per-tensor scales). Every linear inside the layers is
# quantized; embeddings, lm_head, norms and the router stay bf16.
NVFP4_BLOCK = 16
NVFP4_EFFECTIVE_BITS = 4 + 8 / NVFP4_BLOCK  # 4.5
NVFP4_BYTES = NVFP4_EFFECTIVE_BITS / 8  # 0.5625 bytes per weight

# Weight-only int4 in compressed-tensors' pack-quantized format (Kimi-K2-Thinking, run by vLLM's
# WNA16 Marlin MoE kernels): symmetric int4 packed eight to an int32 and one bf16 scale per group
# of 32 input channels, no zero points (symmetric). The per-tensor `weight_shape` is negligible.
INT4_WO_GROUP_SIZE = 32
INT4_WO_EFFECTIVE_BITS = 4 + 16 / INT4_WO_GROUP_SIZE  # 4.5
INT4_WO_BYTES = INT4_WO_EFFECTIVE_BITS / 8  # 0.5625 bytes per weight

# --quantization names -> average bytes per quantized linear weight. None is an unquantized bf16
# checkpoint. fp8 and int8/w8a8 carry per-tensor or per-channel scales: one scale per output
# row or per tensor is < 0.1% of the weights, so they count as exactly 1 byte.
QUANTIZATION_WEIGHT_BYTES: dict[str | None, float] = {
    None: 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "w8a8": 1.0,
    "awq": INT4_GROUPWISE_BYTES,
    "gptq": INT4_GROUPWISE_BYTES,
    "mxfp4": MXFP4_BYTES,
    "nvfp4": NVFP4_BYTES,
    "int4_wo": INT4_WO_BYTES,
}

#: Which linear weights a method compresses: "linear" (every linear weight inside the layers, the
#: default) or "experts" (the routed experts only: gpt-oss's quantization_config lists attention,
#: router, embeddings and lm_head in modules_to_not_convert; Kimi-K2-Thinking's int4 checkpoint
#: `ignore`s self_attn, shared_experts and the dense MLPs).
QUANTIZATION_SCOPE: dict[str, str] = {"mxfp4": "experts", "int4_wo": "experts"}

# vLLM kernel-specific spellings that describe the same storage format.
_QUANTIZATION_ALIASES: dict[str, str] = {
    "awq_marlin": "awq",
    "gptq_marlin": "gptq",
    "fbgemm_fp8": "fp8",
    "modelopt_fp4": "nvfp4",
}


def dtype_bytes(name: str) -> float:
    """Bytes per element for a vLLM dtype name (`--dtype`, `--kv-cache-dtype`)."""
    key = str(name).strip().lower()
    if key not in _DTYPE_BYTES:
        choices = ", ".join(sorted(_DTYPE_BYTES))
        raise ConfigError(f"unknown dtype {name!r}; choose one of: {choices}")
    return _DTYPE_BYTES[key]


def quantization_weight_bytes(name: str | None) -> float:
    """Average bytes per quantized linear weight for a vLLM `--quantization` name.

    None, "", "none" and "bf16"/"bfloat16" all mean an unquantized bf16 checkpoint.
    """
    key = canonical_quantization(name)
    if key not in QUANTIZATION_WEIGHT_BYTES:
        choices = ", ".join(sorted(k for k in QUANTIZATION_WEIGHT_BYTES if k is not None))
        raise ConfigError(
            f"unknown quantization {name!r}; choose one of: none, {choices}"
        )
    return QUANTIZATION_WEIGHT_BYTES[key]


def canonical_quantization(name: str | None) -> str | None:
    """The storage format a `--quantization` name stands for (None: bf16), vLLM's kernel-specific
    spellings folded into one (`modelopt_fp4` is nvfp4), so the cost models match one name."""
    if name is None:
        return None
    key = str(name).strip().lower()
    if key in ("", "none", "bf16", "bfloat16"):
        return None
    return _QUANTIZATION_ALIASES.get(key, key)


def quantization_scope(name: str | None) -> str:
    """"linear" or "experts": which linear weights `--quantization name` stores compressed."""
    key = canonical_quantization(name)
    return "linear" if key is None else QUANTIZATION_SCOPE.get(key, "linear")
