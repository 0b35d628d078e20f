"""What one decoder layer of a deployment runs, per GPU: its GEMM shapes, attention shape,
all-reduce messages and elementwise traffic. Everything here is shape arithmetic from the model
config and the TP degree; the times come from the tables (`model.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from rllmsim.deployment import Deployment, parse_vllm_version
from rllmsim.specs.dtypes import canonical_quantization

#: vLLM's default CUDA-graph capture sizes: 1, 2, 4, then every 8 to 256, then every 16 up to the
#: largest, min(2 x max_num_seqs x tokens per decode, 512) (vllm/config/vllm.py; 1024 on
#: Blackwell datacenter GPUs from 0.32). A graphed step is padded up to the next size.
DEFAULT_MAX_CAPTURE_SIZE = 512
BLACKWELL_MAX_CAPTURE_SIZE = (1024, (0, 32))  # size, first vLLM version
_BLACKWELL = ("b200", "b300", "gb200", "gb300")
#: Kernels launched per decoder layer (norms, projections, rotary, attention, activation,
#: all-reduces): what an eager step must launch from the CPU.
KERNELS_PER_LAYER = 12
ACTIVATION_BYTES = 2  # bf16 activations between layers


def max_capture_size(deployment: Deployment) -> int:
    """The largest batch vLLM captures a CUDA graph for (0 with --enforce-eager)."""
    if deployment.enforce_eager:
        return 0
    ceiling = DEFAULT_MAX_CAPTURE_SIZE
    size, since = BLACKWELL_MAX_CAPTURE_SIZE
    if deployment.gpu.name in _BLACKWELL and parse_vllm_version(deployment.vllm_version) >= since:
        ceiling = size
    return min(2 * deployment.max_num_seqs * (1 + deployment.num_speculative_tokens), ceiling)


def capture_sizes(max_size: int) -> list[int]:
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, max_size + 1, 16))
    return [s for s in sizes if s <= max_size] or [max_size]


@dataclass(frozen=True)
class Gemm:
    """One projection: per-GPU output width n, input width k, and how many layers run it."""

    name: str
    n: int
    k: int
    layers: int


@dataclass(frozen=True)
class LayerShapes:
    gemms: tuple[Gemm, ...]
    lm_head: Gemm
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    moe_layers: int
    allreduce_bytes_per_token: int
    norm_allreduces: int  # per layer: q/k RMSNorms over the whole layer reduce their variance across TP
    elementwise_bytes_per_token: float  # per layer
    elementwise_kernels: int  # per layer
    mla: bool = False  # attention is an MLA module (projections inside it, `mla.py`)
    full_attention_layers: int = 0  # layers attending to their whole context
    sliding_layers: int = 0  # layers attending to the last `sliding_window` tokens
    sliding_window: int = 0


def gemm_dtype(deployment: Deployment) -> str:
    """The kernel-table GEMM dtype vLLM runs for a quantization method: fp8 of a checkpoint
    quantized in blocks (DeepSeek-style 128x128 scales) runs block-scaled GEMMs."""
    method = canonical_quantization(deployment.quantization)
    if method is None:
        return "bfloat16"
    model = deployment.model
    if method == "fp8" and model.checkpoint_quantization == "fp8" and "block" in model.checkpoint_quantization_format:
        return "fp8_block"
    # MXFP4 (gpt-oss) and int4 (Kimi-K2-Thinking) checkpoints quantize the routed experts only:
    # every other linear runs bf16
    return {"mxfp4": "bfloat16", "int4_wo": "bfloat16"}.get(method, method)


#: Fused-MoE table dtypes of the methods whose experts run their own kernels: vLLM's W4A16 MXFP4
#: kernels, and its WNA16 Marlin MoE for compressed-tensors int4 (aiconfigurator's `int4_wo`).
_EXPERT_DTYPES = {"mxfp4": "w4a16_mxfp4", "int4_wo": "int4_wo"}


def moe_dtype(deployment: Deployment) -> str:
    """The fused-MoE table dtype of the routed experts (NVFP4 experts: the nvfp4 rows, as its GEMMs)."""
    return _EXPERT_DTYPES.get(canonical_quantization(deployment.quantization) or "", gemm_dtype(deployment))


#: The lm_head's GEMM dtype, bf16 whatever the layers run: vLLM's quantization methods quantize
#: linear layers (`LinearBase`) and fused experts, and the lm_head is a `ParallelLMHead`, a
#: vocab-parallel embedding, which they leave unquantized (vLLM 0.32
#: `model_executor/layers/quantization/fp8.py` `get_quant_method`; ModelOpt's NVFP4 and the
#: compressed-tensors checkpoints list it as ignored), as its weight bytes already count it.
LM_HEAD_DTYPE = "bfloat16"


def layer_shapes(deployment: Deployment) -> LayerShapes:
    m, tp = deployment.model, deployment.tp
    kv_heads = max(1, m.num_kv_heads // tp)
    heads = m.num_attention_heads // tp
    h = m.hidden_size
    mla = m.attention.is_mla
    gemms = [] if mla else [  # an MLA layer's projections are inside its measured module
        Gemm("qkv_proj", (heads + 2 * kv_heads) * m.head_dim, h, m.num_layers),
        Gemm("o_proj", h, heads * m.head_dim, m.num_layers),
    ]
    if m.num_dense_layers:
        gemms += [Gemm("gate_up_proj", 2 * m.intermediate_size // tp, h, m.num_dense_layers),
                  Gemm("down_proj", h, m.intermediate_size // tp, m.num_dense_layers)]
    if m.num_moe_layers and m.shared_expert_intermediate_size:
        width = m.shared_expert_intermediate_size // tp
        gemms += [Gemm("shared_gate_up_proj", 2 * width, h, m.num_moe_layers),
                  Gemm("shared_down_proj", h, width, m.num_moe_layers)]
    widest = max(m.intermediate_size if m.num_dense_layers else 0, m.moe_intermediate_size * max(1, m.num_experts_per_tok))
    # two fused residual-add RMSNorms (read x and residual, write both), activation (read 2w,
    # write w), rotary on q and k (read and write), q/k norms where the model has them
    per_token = 8 * h + 3 * widest / tp
    if not mla:  # MLA's rotary and latent norms are inside its module
        per_token += 2 * (heads + kv_heads) * m.head_dim * (2 if m.qk_norm else 1)
    sliding = m.attention.num_sliding_layers
    return LayerShapes(
        gemms=tuple(gemms),
        lm_head=Gemm("lm_head", m.vocab_size // tp, h, 1),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=m.head_dim,
        layers=m.num_layers,
        moe_layers=m.num_moe_layers,
        allreduce_bytes_per_token=h * ACTIVATION_BYTES,
        norm_allreduces=2 if m.attention.qk_norm == "per_layer" and tp > 1 else 0,
        elementwise_bytes_per_token=per_token * ACTIVATION_BYTES,
        elementwise_kernels=3 if mla else (5 if m.qk_norm else 4),
        mla=mla,
        full_attention_layers=m.num_layers - sliding,
        sliding_layers=sliding,
        sliding_window=int(m.attention.sliding_window or 0) if sliding else 0,
    )
