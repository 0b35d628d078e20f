"""Model specs of the MoE reasoning models: MLA, dense-first layers, shared experts, MTP, sliding
windows, attention sinks, biased experts, checkpoint quantization, and the published counts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rllmsim.errors import ConfigError
from rllmsim.specs import load_model, model_names
from rllmsim.specs.attention import SLIDING_ATTENTION
from rllmsim.specs.model_catalog import SUPPORTED_ARCHITECTURES

#: Catalog key -> Hugging Face id of the entries added for DeepSeek-V3 / gpt-oss / Qwen3-MoE /
#: MiniMax-M2 / GLM-4.x architectures.
NEW_MODELS = {
    "deepseek-r1": "deepseek-ai/DeepSeek-R1",
    "deepseek-r1-0528": "deepseek-ai/DeepSeek-R1-0528",
    "deepseek-v3.1": "deepseek-ai/DeepSeek-V3.1",
    "kimi-k2-instruct": "moonshotai/Kimi-K2-Instruct",
    "kimi-k2-thinking": "moonshotai/Kimi-K2-Thinking",
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "qwen3-235b-a22b-fp8": "Qwen/Qwen3-235B-A22B-FP8",
    "qwen3-235b-a22b-thinking-2507": "Qwen/Qwen3-235B-A22B-Thinking-2507",
    "qwen3-30b-a3b-thinking-2507": "Qwen/Qwen3-30B-A3B-Thinking-2507",
    "qwen3-30b-a3b-instruct-2507": "Qwen/Qwen3-30B-A3B-Instruct-2507",
    "minimax-m2": "MiniMaxAI/MiniMax-M2",
    "minimax-m2.5": "MiniMaxAI/MiniMax-M2.5",
    "glm-4.6": "zai-org/GLM-4.6",
}
BF16 = 2


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text
    return text


def _write(tmp_path, config: dict):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def _deepseek_config(**changes) -> dict:
    from importlib import resources

    raw = json.loads(resources.files("rllmsim.specs").joinpath("models", "deepseek-r1.json").read_text())
    raw.pop("_rllmsim")
    raw.update(changes)
    return raw


# ---- every new entry ---------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "hf_id"), sorted(NEW_MODELS.items()))
def test_new_entry_loads_and_its_hf_id_resolves(key: str, hf_id: str) -> None:
    spec = load_model(key)
    assert spec.hf_id == hf_id and spec.published_source.strip()
    for alias in (hf_id, hf_id.lower(), f"  {hf_id.upper()} ", hf_id.split("/")[1]):
        assert load_model(alias).name == key


def test_qwen3_2507_hf_id_resolves_to_its_own_entry() -> None:
    spec = load_model("Qwen/Qwen3-30B-A3B-Instruct-2507")
    assert spec.name == "qwen3-30b-a3b-instruct-2507" and not spec.reasoning
    assert load_model("Qwen/Qwen3-30B-A3B").name == "qwen3-30b-a3b"  # the April release stays apart
    assert spec.max_position_embeddings == 262144
    # HF's safetensors of the 2507 Instruct hold 30,532,122,624 BF16 parameters.
    assert spec.param_count() == 30_532_122_624


@pytest.mark.parametrize("name", [n for n in model_names() if load_model(n).published_active_params_b])
def test_active_params_match_published_in_the_cards_convention(name: str) -> None:
    spec = load_model(name)
    active_b = spec.active_param_count(spec.published_active_convention) / 1e9
    assert active_b == pytest.approx(spec.published_active_params_b, rel=0.02)
    assert spec.active_param_count("no_embeddings") < spec.active_param_count("no_input_embedding") \
        <= spec.active_param_count("all") <= spec.param_count()


# ---- DeepSeek-V3 architecture: MLA, dense-first layers, shared expert, MTP ----------------------
def test_deepseek_mla_attention_params_of_one_layer_by_hand() -> None:
    spec = load_model("deepseek-r1")
    a = spec.attention
    assert (a.kind, a.q_lora_rank, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim) == \
        ("mla", 1536, 512, 128, 64, 128)
    h, heads = 7168, 128
    q_a_proj = h * 1536                       # 11,010,048
    q_b_proj = 1536 * heads * (128 + 64)      # 37,748,736
    kv_a_proj_with_mqa = h * (512 + 64)       # 4,128,768: the latent and the shared rotary key
    kv_b_proj = 512 * heads * (128 + 128)     # 16,777,216: per-head no-rope key and value
    o_proj = heads * 128 * h                  # 117,440,512
    linear = q_a_proj + q_b_proj + kv_a_proj_with_mqa + kv_b_proj + o_proj
    assert linear == 187_105_280
    assert spec._attention_linear() == linear
    assert spec._attention_extra() == 1536 + 512  # q_a_layernorm, kv_a_layernorm
    assert spec.head_dim == 192 and spec.q_size == heads * 192 and a.mla_latent_dim == 576


def test_deepseek_layers_experts_and_mtp() -> None:
    spec = load_model("deepseek-r1")
    assert (spec.num_layers, spec.num_dense_layers, spec.num_moe_layers) == (61, 3, 58)  # first_k_dense_replace 3
    assert (spec.num_experts, spec.num_experts_per_tok, spec.moe_intermediate_size) == (256, 8, 2048)
    assert spec.num_shared_experts == 1 and spec.shared_expert_intermediate_size == 2048
    assert spec.router_bias  # noaux_tc: e_score_correction_bias beside the router weights
    assert spec._router() == 7168 * 256 + 256
    # The 671B excludes the MTP module; DeepSeek publishes it as 11.5B unique parameters.
    assert spec.num_mtp_layers == 1
    assert spec.mtp_param_count() / 1e9 == pytest.approx(spec.published_mtp_params_b, rel=0.02)
    assert spec.param_count() / 1e9 == pytest.approx(671, rel=0.001)
    assert (spec.checkpoint_quantization, spec.checkpoint_quantization_format) == ("fp8", "e4m3, 128x128 blocks")
    assert "ue8m0" in load_model("deepseek-v3.1").checkpoint_quantization_format


def test_kimi_k2_one_dense_layer_384_experts_no_mtp() -> None:
    spec = load_model("kimi-k2-instruct")
    assert spec.attention.is_mla and spec.num_attention_heads == 64
    assert (spec.num_dense_layers, spec.num_moe_layers, spec.num_experts) == (1, 60, 384)
    assert spec.num_mtp_layers == 0 and spec.mtp_param_count() == 0
    thinking = load_model("kimi-k2-thinking")
    assert thinking.param_count() == spec.param_count()  # same shapes, INT4 experts
    assert thinking.checkpoint_quantization == "compressed-tensors"
    assert "int4" in thinking.checkpoint_quantization_format and "group 32" in thinking.checkpoint_quantization_format


def test_mla_kv_cache_is_its_latent_not_gqa_heads() -> None:
    spec = load_model("deepseek-r1")
    assert spec.kv_bytes_per_token(BF16) == 61 * (512 + 64) * BF16


# ---- gpt-oss: sliding windows, sinks, biases, MXFP4 ---------------------------------------------
def test_gpt_oss_sliding_layers_sinks_and_biases() -> None:
    spec = load_model("gpt-oss-120b")
    a = spec.attention
    assert a.kind == "gqa" and a.sinks and a.sliding_window == 128
    assert a.num_sliding_layers == 18 and len(a.layer_types) == 36
    assert a.is_sliding(0) and not a.is_sliding(1) and a.layer_types[34] == SLIDING_ATTENTION
    assert spec.attention_bias and spec.o_proj_bias and spec.expert_bias and spec.router_bias
    assert (spec.num_experts, spec.num_experts_per_tok, spec.moe_intermediate_size) == (128, 4, 2880)
    assert spec.checkpoint_quantization == "mxfp4"
    # One layer's attention: q/k/v/o weights and biases plus one sink per head.
    q, kv, h = 64 * 64, 8 * 64, 2880
    assert spec._attention_linear() + spec._attention_extra() == (
        h * q + 2 * h * kv + q * h) + (q + 2 * kv + h) + 64
    # OpenAI's table: 116.83B total, 5.13B active (unembedding counted, embedding not).
    assert spec.param_count() / 1e9 == pytest.approx(116.83, abs=0.005)
    assert spec.active_param_count("no_input_embedding") / 1e9 == pytest.approx(5.13, abs=0.005)
    # every layer's K and V as if it kept every token; how sliding layers share the pool is kv_layout's
    assert spec.kv_bytes_per_token(BF16) == 36 * 8 * 64 * 2 * 2
    assert "18 of 36 layers sliding over 128 tokens" in a.describe()


def test_eagle_head_replacement_keeps_counting() -> None:
    # Deployment builds an EAGLE head with dataclasses.replace(num_layers=1): counts still follow.
    spec = load_model("gpt-oss-20b")
    head = dataclasses.replace(spec, num_layers=1, num_moe_layers=1)
    assert 0 < head.param_count() < spec.param_count()


# ---- MiniMax-M2 and GLM-4.x: GQA variants --------------------------------------------------------
def test_minimax_m2_qk_norm_over_the_layer_partial_rotary_mtp() -> None:
    spec = load_model("minimax-m2.5")
    a = spec.attention
    assert a.kind == "gqa" and a.qk_norm == "per_layer" and a.rotary_dim == 64 and spec.head_dim == 128
    assert spec._attention_extra() == 48 * 128 + 8 * 128  # q_norm over q_size, k_norm over kv_size
    assert spec.num_moe_layers == spec.num_layers == 62 and spec.num_shared_experts == 0
    assert spec.router_bias and spec.num_mtp_layers == 3
    assert spec.kv_bytes_per_token(BF16) == 62 * 8 * 128 * 2 * BF16  # full attention everywhere


def test_glm_46_dense_first_shared_expert_qkv_bias_only() -> None:
    spec = load_model("glm-4.6")
    a = spec.attention
    assert a.qk_norm == "per_head" and a.rotary_dim == 64  # partial_rotary_factor 0.5 of head_dim 128
    assert spec.attention_bias and not spec.o_proj_bias  # GLM's o_proj has no bias
    assert (spec.num_dense_layers, spec.num_moe_layers, spec.num_experts) == (3, 89, 160)
    assert spec.shared_expert_intermediate_size == 1536 and spec.router_bias and spec.num_mtp_layers == 1
    assert spec.max_position_embeddings == 202752
    assert spec.kv_bytes_per_token(BF16) == 92 * 8 * 128 * 2 * BF16


def test_qwen3_moe_entries_are_plain_gqa() -> None:
    for name in ("qwen3-235b-a22b-fp8", "qwen3-30b-a3b-thinking-2507"):
        spec = load_model(name)
        assert spec.attention.kind == "gqa" and not spec.attention.has_sliding_window
        assert spec.attention.qk_norm == "per_head" and not spec.router_bias and spec.num_mtp_layers == 0
    assert load_model("qwen3-235b-a22b-fp8").checkpoint_quantization == "fp8"


def _shapes(name: str) -> tuple:
    """What sizes a model: every count, layer split and KV shape (not its name or context)."""
    s = load_model(name)
    return (s.param_count(), s.active_param_count("all"), s.mtp_param_count(), s.num_layers,
            s.num_dense_layers, s.num_moe_layers, s.num_experts, s.attention, s.kv_bytes_per_token(BF16))


def test_r1_0528_is_r1s_architecture_under_its_own_id() -> None:
    spec = load_model("deepseek-ai/DeepSeek-R1-0528")
    assert spec.name == "deepseek-r1-0528" and spec.reasoning and spec.checkpoint_quantization == "fp8"
    assert load_model("DeepSeek-R1").name == "deepseek-r1"  # the January release stays apart
    assert _shapes("deepseek-r1-0528") == _shapes("deepseek-r1")
    assert spec.attention.mla_latent_dim == 576 and spec.num_mtp_layers == 1


def test_qwen3_235b_thinking_2507_is_bf16_with_256k_context() -> None:
    spec = load_model("Qwen/Qwen3-235B-A22B-Thinking-2507")
    assert spec.name == "qwen3-235b-a22b-thinking-2507" and spec.reasoning
    assert spec.max_position_embeddings == 262144 and spec.checkpoint_quantization is None
    assert load_model("Qwen/Qwen3-235B-A22B-FP8").max_position_embeddings == 40960
    assert _shapes("qwen3-235b-a22b-thinking-2507") == _shapes("qwen3-235b-a22b-fp8")


def test_minimax_m2_all_softmax_layers_same_shapes_as_m25() -> None:
    spec = load_model("MiniMaxAI/MiniMax-M2")
    assert spec.name == "minimax-m2" and load_model("MiniMaxAI/MiniMax-M2.5").name == "minimax-m2.5"
    assert spec.attention.layer_types in ((), ("full_attention",) * 62) and not spec.attention.has_sliding_window
    assert spec.max_position_embeddings == 196608 and spec.checkpoint_quantization == "fp8"
    assert _shapes("minimax-m2") == _shapes("minimax-m2.5")


# ---- errors --------------------------------------------------------------------------------------
def test_unsupported_architecture_names_itself_and_the_supported_ones(tmp_path) -> None:
    path = _write(tmp_path, {"architectures": ["MambaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 64})
    with pytest.raises(ConfigError) as exc:
        load_model(path)
    text = _one_line(exc)
    assert "MambaForCausalLM" in text and str(path) in text
    assert all(arch in text for arch in SUPPORTED_ARCHITECTURES)


@pytest.mark.parametrize("bad", [-1, 0, "512", 512.0, True])
def test_bad_mla_value_is_one_line(tmp_path, bad) -> None:
    path = _write(tmp_path, _deepseek_config(kv_lora_rank=bad))
    with pytest.raises(ConfigError) as exc:
        load_model(path)
    text = _one_line(exc)
    assert "kv_lora_rank" in text and repr(bad) in text


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"qk_rope_head_dim": "64"}, "qk_rope_head_dim"),
        ({"q_lora_rank": -5}, "q_lora_rank"),
        ({"first_k_dense_replace": -1}, "first_k_dense_replace"),
        ({"num_nextn_predict_layers": "one"}, "num_nextn_predict_layers"),
        ({"layer_types": ["full_attention"] * 3}, "layer_types"),
        ({"attn_type_list": [0] * 61}, "attn_type_list"),
        ({"quantization_config": "fp8"}, "quantization_config"),
    ],
)
def test_bad_shape_values_are_one_line(tmp_path, changes: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_model(_write(tmp_path, _deepseek_config(**changes)))
    assert needle in _one_line(exc)


def test_sliding_layers_need_a_window(tmp_path) -> None:
    from importlib import resources

    raw = json.loads(resources.files("rllmsim.specs").joinpath("models", "gpt-oss-20b.json").read_text())
    raw.pop("_rllmsim")
    raw["sliding_window"] = None
    with pytest.raises(ConfigError) as exc:
        load_model(_write(tmp_path, raw))
    assert "sliding_window" in _one_line(exc)


def test_user_mla_config_without_q_lora_uses_a_full_q_proj(tmp_path) -> None:
    # DeepSeek-V2-Lite style: q_lora_rank null means one q_proj of hidden x heads x (nope + rope).
    spec = load_model(_write(tmp_path, _deepseek_config(q_lora_rank=None)))
    assert spec.attention.q_lora_rank == 0
    full = load_model("deepseek-r1")
    h, heads = 7168, 128
    assert spec._attention_linear() - full._attention_linear() == h * heads * 192 - (h * 1536 + 1536 * heads * 192)
    assert spec.published_params_b is None  # a user's config carries no published figure


def test_bad_active_convention_in_meta(tmp_path) -> None:
    raw = _deepseek_config(_rllmsim={"hf_id": "x/y", "active_convention": "some"})
    with pytest.raises(ConfigError) as exc:
        load_model(_write(tmp_path, raw))
    assert "active_convention" in _one_line(exc)
