"""Specs: shipped catalogs are internally consistent and derived counts match published facts."""

from __future__ import annotations

import json
import math

import pytest

from rllmsim.errors import ConfigError
from rllmsim.specs import GPUSpec, dtype_bytes, gpu_names, load_gpu, load_model, model_names
from rllmsim.specs.dtypes import INT4_GROUPWISE_BYTES, QUANTIZATION_WEIGHT_BYTES, quantization_weight_bytes

REQUIRED_MODELS = {
    "deepseek-r1-distill-qwen-1.5b",
    "deepseek-r1-distill-qwen-7b",
    "deepseek-r1-distill-qwen-14b",
    "deepseek-r1-distill-qwen-32b",
    "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-llama-70b",
    "qwq-32b",
    "qwen3-8b",
    "qwen3-32b",
    "qwen3-30b-a3b",
    "qwen2.5-math-7b",
    "qwen2.5-7b-instruct",
    "qwen2.5-14b-instruct",
    "qwen2.5-32b-instruct",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.3-70b-instruct",
}
REQUIRED_GPUS = {
    "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "b300", "gb200", "gb300",
    "l40s", "l4", "rtx-4090", "rtx-pro-6000", "mi300x", "arc-pro-b60", "h20", "mi355x",
}
#: Blackwell Ultra cuts INT8 tensor throughput below its BF16 rate (datasheet: 307 / 330 TOPS sparse).
REDUCED_INT8_GPUS = {"b300", "gb300"}
#: GPUs added for the aiconfigurator kernel tables (shared/kernels/aiconfigurator-vllm).
KERNEL_TABLE_GPUS = ("b300", "gb200", "gb300", "arc-pro-b60")


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text
    return text


# ---- models ----------------------------------------------------------------------------------
def test_catalog_has_required_models() -> None:
    assert REQUIRED_MODELS <= set(model_names())


@pytest.mark.parametrize("name", model_names())
def test_param_count_matches_published_size(name: str) -> None:
    spec = load_model(name)
    assert spec.published_params_b is not None
    derived_b = spec.param_count() / 1e9
    assert derived_b == pytest.approx(spec.published_params_b, rel=0.02)


@pytest.mark.parametrize("name", model_names())
def test_catalog_files_keep_hf_config_separate(name: str) -> None:
    from importlib import resources

    raw = json.loads(resources.files("rllmsim.specs").joinpath("models", f"{name}.json").read_text())
    meta = raw["_rllmsim"]
    assert set(meta) <= {"hf_id", "published_params_b", "published_active_params_b", "published_mtp_params_b",
                         "active_convention", "reasoning", "source", "config_source"}
    assert "/" in meta["hf_id"] and isinstance(meta["reasoning"], bool)
    for key in ("source", "config_source"):  # where the published figures and the config come from
        assert key not in meta or (isinstance(meta[key], str) and meta[key].strip())
    # The rest is the HF config: no rllmsim-specific keys leak into it.
    assert all(not k.startswith("_") for k in raw if k != "_rllmsim")
    # Unquantized tensors are bf16 (gpt-oss's config names no dtype; its non-expert weights are bf16).
    assert raw["architectures"] and raw.get("torch_dtype", raw.get("dtype", "bfloat16")) == "bfloat16"


def test_exact_count_against_safetensors_total() -> None:
    # HF reports 32,763,876,352 BF16 parameters for DeepSeek-R1-Distill-Qwen-32B (safetensors).
    assert load_model("deepseek-r1-distill-qwen-32b").param_count() == 32_763_876_352


def test_moe_active_params() -> None:
    spec = load_model("qwen3-30b-a3b")
    assert spec.is_moe and spec.num_experts == 128 and spec.num_experts_per_tok == 8
    assert spec.num_moe_layers == spec.num_layers == 48
    assert spec.active_param_count() / 1e9 == pytest.approx(3.3, rel=0.03)
    assert spec.published_active_params_b == 3.3
    assert spec.param_count() / 1e9 == pytest.approx(30.5, rel=0.01)
    # Per token it multiplies through only 8 of 128 experts.
    assert spec.linear_params_per_token() < spec.active_param_count()


def test_dense_active_equals_total() -> None:
    spec = load_model("qwen3-8b")
    assert spec.active_param_count() == spec.param_count()


def test_kv_bytes_per_token_hand_checked() -> None:
    spec = load_model("deepseek-r1-distill-qwen-7b")
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim) == (28, 4, 128)
    assert spec.kv_bytes_per_token(dtype_bytes("bfloat16")) == 28 * 4 * 128 * 2 * 2 == 57344
    assert spec.kv_bytes_per_token(dtype_bytes("fp8")) == 57344 / 2


def test_head_dim_explicit_for_qwen3() -> None:
    spec = load_model("qwen3-32b")
    # hidden / heads would be 80; the config's head_dim=128 wins.
    assert spec.hidden_size // spec.num_attention_heads == 80
    assert spec.head_dim == 128 and spec.qk_norm


def test_qwen2_has_qkv_bias_llama_does_not() -> None:
    assert load_model("qwen2.5-7b-instruct").attention_bias
    assert not load_model("qwen2.5-7b-instruct").o_proj_bias
    assert not load_model("llama-3.1-8b").attention_bias


def test_attention_flops_per_pair() -> None:
    spec = load_model("llama-3.1-8b")
    assert spec.attention_flops_per_pair() == 4 * 32 * 32 * 128


def test_linear_params_exclude_embedding_include_lm_head() -> None:
    spec = load_model("deepseek-r1-distill-qwen-7b")
    # Untied model: total = linear weights + embedding + small extras (biases, norms).
    extras = spec.param_count() - spec.linear_params_per_token() - spec.embedding_params
    assert 0 < extras < 0.001 * spec.param_count()
    assert spec.linear_params_per_token() == spec.layer_linear_params_per_token() + spec.lm_head_params


def test_weight_bytes_keeps_embeddings_bf16_when_quantized() -> None:
    spec = load_model("llama-3.1-8b")
    bf16 = spec.weight_bytes(2.0)
    assert bf16 == 2 * spec.param_count()
    fp8 = spec.weight_bytes(1.0)
    embed_and_head = spec.embedding_params + spec.lm_head_params
    # Quantized: embedding + lm_head (and norms) stay at 2 bytes, so more than half of bf16.
    assert fp8 > bf16 / 2 + embed_and_head * 0.99
    assert spec.weight_bytes(4.0) == 2 * bf16
    awq = spec.weight_bytes(QUANTIZATION_WEIGHT_BYTES["awq"])
    assert bf16 / 4 < awq < fp8


def test_reasoning_flags() -> None:
    assert load_model("deepseek-r1-distill-qwen-7b").reasoning
    assert load_model("qwq-32b").reasoning
    assert not load_model("llama-3.1-8b").reasoning


@pytest.mark.parametrize(
    "alias",
    [
        "deepseek-r1-distill-qwen-7b",
        "DeepSeek-R1-Distill-Qwen-7B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "  deepseek-ai/deepseek-r1-distill-qwen-7b ",
    ],
)
def test_model_aliases(alias: str) -> None:
    assert load_model(alias).name == "deepseek-r1-distill-qwen-7b"


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(ConfigError) as exc:
        load_model("deepseek-r1-distil-qwen-7b")
    text = _one_line(exc)
    assert "deepseek-r1-distill-qwen-7b" in text and "config.json" in text


def test_load_from_config_path(tmp_path) -> None:
    from importlib import resources

    raw = json.loads(resources.files("rllmsim.specs").joinpath("models", "qwen3-8b.json").read_text())
    raw.pop("_rllmsim")
    folder = tmp_path / "my-qwen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(raw))
    for target in (folder, folder / "config.json", str(folder / "config.json")):
        spec = load_model(target)
        assert spec.name == "my-qwen"
        assert spec.param_count() == load_model("qwen3-8b").param_count()
        assert spec.published_params_b is None and not spec.reasoning


def test_config_missing_key_names_key_and_file(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                                "intermediate_size": 128, "max_position_embeddings": 512}))
    with pytest.raises(ConfigError) as exc:
        load_model(path)
    text = _one_line(exc)
    assert "vocab_size" in text and str(path) in text


def test_config_bad_json_and_empty_dir(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError) as exc:
        load_model(bad)
    _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        load_model(tmp_path)
    assert "config.json" in _one_line(exc)


def test_mla_config_missing_latent_shape_names_key(tmp_path) -> None:
    # MLA is modelled (tests/test_model_specs.py); an MLA config without its head dims says which is missing.
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"kv_lora_rank": 512, "hidden_size": 7168, "num_hidden_layers": 2,
                                "num_attention_heads": 8, "vocab_size": 100, "max_position_embeddings": 64}))
    with pytest.raises(ConfigError) as exc:
        load_model(path)
    assert "qk_nope_head_dim" in _one_line(exc)


# ---- GPUs ------------------------------------------------------------------------------------
def test_catalog_has_required_gpus() -> None:
    assert REQUIRED_GPUS <= set(gpu_names())


@pytest.mark.parametrize("name", gpu_names())
def test_gpu_numbers_positive_with_price_provenance(name: str) -> None:
    gpu = load_gpu(name)
    assert isinstance(gpu, GPUSpec) and gpu.name == name
    for field in ("hbm_gib", "hbm_bandwidth_gbps", "bf16_tflops", "int8_tops", "interconnect_gbps",
                  "price_per_gpu_hour_usd"):
        value = getattr(gpu, field)
        assert value > 0 and math.isfinite(value), field
    assert gpu.fp8_tflops >= 0
    assert gpu.price_source.strip() and gpu.display_name.strip() and gpu.interconnect.strip()
    year, month = gpu.price_date.split("-")
    assert 2023 <= int(year) <= 2030 and 1 <= int(month) <= 12
    # Dense peaks: int8 is at least bf16 rate (except Blackwell Ultra); fp8 (where present) doubles bf16.
    if name in REDUCED_INT8_GPUS:
        assert gpu.int8_tops < gpu.bf16_tflops / 10
    else:
        assert gpu.int8_tops >= gpu.bf16_tflops
    if gpu.has_fp8:
        assert gpu.fp8_tflops == pytest.approx(2 * gpu.bf16_tflops, rel=0.02)  # L40S sheet: 362 vs 733


@pytest.mark.parametrize(
    ("alias", "key"),
    [
        ("H100", "h100-sxm"),
        ("h100_sxm", "h100-sxm"),
        ("H100-SXM5", "h100-sxm"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("rtxpro6000", "rtx-pro-6000"),
        ("rtx-pro-6000-blackwell", "rtx-pro-6000"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000"),
        ("a100", "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("AMD Instinct MI300X", "mi300x"),
        ("RTX 4090", "rtx-4090"),
        ("NVIDIA H20", "h20"),  # nvidia-smi's name; not the H200
        ("NVIDIA H200", "h200"),
        ("AMD Instinct MI355X", "mi355x"),
        ("MI355X", "mi355x"),
    ],
)
def test_gpu_aliases(alias: str, key: str) -> None:
    assert load_gpu(alias).name == key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        # aiconfigurator system names (shared/kernels/aiconfigurator-vllm/<system>.yaml)
        ("a100_sxm", "a100-80gb"),
        ("h100_sxm", "h100-sxm"),
        ("h200_sxm", "h200"),
        ("b200_sxm", "b200"),
        ("b300_sxm", "b300"),
        ("gb200", "gb200"),
        ("gb300", "gb300"),
        ("l40s", "l40s"),
        ("rtx_pro_6000_server", "rtx-pro-6000"),
        ("b60", "arc-pro-b60"),
        # the `device` column those systems' kernel tables record
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA B300 SXM6 AC", "b300"),
        ("NVIDIA GB200", "gb200"),
        ("NVIDIA GB300", "gb300"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000"),
        ("Intel(R) Arc(TM) Pro B60 Graphics", "arc-pro-b60"),
        ("Intel(R) Graphics [0xe211]", "arc-pro-b60"),
        # LLMServingSim layer-profile folder names
        ("RTXPRO6000", "rtx-pro-6000"),
        ("RTX4090", "rtx-4090"),
    ],
)
def test_kernel_table_systems_and_devices_resolve(name: str, key: str) -> None:
    assert load_gpu(name).name == key


@pytest.mark.parametrize("name", KERNEL_TABLE_GPUS)
def test_kernel_table_gpus_load_with_peaks_and_price_date(name: str) -> None:
    gpu = load_gpu(name)
    assert gpu.bf16_tflops > 0 and gpu.int8_tops > 0 and gpu.hbm_bandwidth_gbps > 0 and gpu.hbm_gib > 0
    assert gpu.price_per_gpu_hour_usd > 0 and gpu.price_source.strip()
    year, month = gpu.price_date.split("-")
    assert len(year) == 4 and 2025 <= int(year) <= 2030 and 1 <= int(month) <= 12
    if gpu.vendor == "nvidia":
        assert gpu.has_fp8 and gpu.fp8_tflops > gpu.bf16_tflops
        assert gpu.interconnect.startswith("nvlink5") and gpu.interconnect_gbps == 900
    else:  # Arc Pro B60: no FP8 matrix units, PCIe 5.0 x8
        assert gpu.vendor == "intel" and not gpu.has_fp8 and gpu.peak_tflops(1) == gpu.bf16_tflops
        assert gpu.interconnect.startswith("pcie") and gpu.interconnect_gbps == 32


def test_kernel_table_gpus_memory_matches_system_yaml() -> None:
    # hbm_gib is the aiconfigurator system's mem_capacity bytes / 2**30 (what the driver reports).
    mem_capacity = {"b300": 288400343040, "gb200": 198674743296, "gb300": 298013687808,
                    "arc-pro-b60": 25769803776}
    for name, capacity in mem_capacity.items():
        assert load_gpu(name).hbm_bytes == pytest.approx(capacity, rel=1e-4), name


def test_h20_and_mi355x_datasheet_figures() -> None:
    """H20: Hopper memory and links with ~15% of H100's tensor peak; MI355X: CDNA 4, 288 GB."""
    h20, h100, mi = load_gpu("h20"), load_gpu("h100-sxm"), load_gpu("mi355x")
    assert (h20.hbm_bandwidth_gbps, h20.bf16_tflops, h20.fp8_tflops, h20.int8_tops) == (4000, 148, 296, 296)
    assert h20.hbm_bytes == pytest.approx(97871 * 2**20, rel=1e-4) and h20.interconnect_gbps == h100.interconnect_gbps
    assert h20.bf16_tflops / h100.bf16_tflops == pytest.approx(0.15, abs=0.01)
    assert mi.vendor == "amd" and mi.hbm_gib == 288 and mi.hbm_bandwidth_gbps == 8000
    assert (mi.bf16_tflops, mi.fp8_tflops) == (2516.6, 5033.2) and mi.peak_tflops(1) == mi.fp8_tflops
    assert mi.interconnect == "xgmi" and mi.interconnect_gbps == pytest.approx(7 * 153.6 / 2)
    # neither has a public on-demand list price: each price names the stand-in it is
    assert all(g.price_source.startswith("Proxy: ") for g in (h20, mi))


def test_unknown_gpu_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        load_gpu("h1000")
    text = _one_line(exc)
    assert "'h1000'" in text and "h100-sxm" in text and "a100-40gb" in text


def test_peak_tflops_picks_fp8_only_where_available() -> None:
    h100, a100 = load_gpu("h100-sxm"), load_gpu("a100-80gb")
    assert h100.peak_tflops(1) == h100.fp8_tflops
    assert h100.peak_tflops(2) == h100.bf16_tflops
    assert a100.peak_tflops(1) == a100.bf16_tflops  # no FP8 units: weight-only fp8 runs in bf16
    assert h100.hbm_bytes == pytest.approx(79.65 * 2**30)


# ---- dtypes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "size"),
    [("auto", 2), ("bfloat16", 2), ("BF16", 2), ("float16", 2), ("half", 2), ("float32", 4),
     ("fp32", 4), ("fp8", 1), ("fp8_e4m3", 1), ("fp8_e5m2", 1), ("int8", 1), ("int4", 0.5)],
)
def test_dtype_bytes(name: str, size: float) -> None:
    assert dtype_bytes(name) == size


def test_unknown_dtype_is_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        dtype_bytes("fp9")
    assert "fp9" in _one_line(exc)


def test_quantization_bytes() -> None:
    assert QUANTIZATION_WEIGHT_BYTES[None] == 2
    assert QUANTIZATION_WEIGHT_BYTES["fp8"] == QUANTIZATION_WEIGHT_BYTES["w8a8"] == 1
    # int4 + (16-bit scale + 4-bit zero) per 128-weight group = 4.15625 bits.
    assert INT4_GROUPWISE_BYTES == pytest.approx(4.15625 / 8)
    assert QUANTIZATION_WEIGHT_BYTES["awq"] == QUANTIZATION_WEIGHT_BYTES["gptq"] == INT4_GROUPWISE_BYTES
    assert quantization_weight_bytes("AWQ_Marlin") == INT4_GROUPWISE_BYTES
    assert quantization_weight_bytes("none") == 2
    with pytest.raises(ConfigError) as exc:
        quantization_weight_bytes("bitsandbytes-9bit")
    _one_line(exc)
