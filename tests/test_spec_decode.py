"""Speculative methods as vLLM names them: MTP, EAGLE-3, aliases, drafter weights and costs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.cli import main
from rllmsim.cost.features import StepFeatures
from rllmsim.cost.speculative import speculative_cost_model
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.workload.table import make_request_table


@pytest.fixture(scope="module")
def r1() -> Deployment:
    return Deployment(model=load_model("deepseek-r1"), gpu=load_gpu("h200"), tp=8)


def test_mtp_on_deepseek_r1_adds_its_mtp_module_in_fp8(r1):
    """The MTP module's weights are mtp_param_count parameters: its decoder layer's linear weights
    at the checkpoint's FP8 (1 byte), the rest (router, norms, eh_proj) in bf16."""
    mtp = dataclasses.replace(r1, speculative_method="mtp", num_speculative_tokens=1)
    m = mtp.model
    a = m.attention
    qk = a.qk_nope_head_dim + a.qk_rope_head_dim
    attention = (m.hidden_size * a.q_lora_rank + a.q_lora_rank * m.num_attention_heads * qk
                 + m.hidden_size * (a.kv_lora_rank + a.qk_rope_head_dim)
                 + a.kv_lora_rank * m.num_attention_heads * (a.qk_nope_head_dim + a.v_head_dim)
                 + m.num_attention_heads * a.v_head_dim * m.hidden_size)
    experts = 3 * m.hidden_size * (m.num_experts * m.moe_intermediate_size + m.shared_expert_intermediate_size)
    fp8 = attention + experts
    expected = fp8 * 1.0 + (m.mtp_param_count() - fp8) * 2.0
    assert mtp.quantization == "fp8"
    assert (mtp.weight_bytes_per_gpu - r1.weight_bytes_per_gpu) * r1.tp == pytest.approx(expected, rel=1e-12)
    assert m.mtp_param_count() / 1e9 == pytest.approx(11.6, abs=0.1)
    assert mtp.num_gpu_blocks < r1.num_gpu_blocks
    head = mtp.drafter
    assert head.num_layers == 1 and head.num_moe_layers == 1 and head.num_experts == m.num_experts


def test_mtp_weights_are_mtp_param_count_bf16_bytes_without_quantization():
    glm = Deployment(model=load_model("glm-4.6"), gpu=load_gpu("h200"), tp=8)
    mtp = dataclasses.replace(glm, speculative_method="mtp", num_speculative_tokens=2)
    assert (mtp.weight_bytes_per_gpu - glm.weight_bytes_per_gpu) * 8 == pytest.approx(
        2.0 * glm.model.mtp_param_count(), rel=1e-12)


def test_mtp_runs_deepseek_r1_on_aime_and_speeds_decoding(r1):
    spec = WorkloadSpec(arrival="gamma", rate=1.0, num_requests=40, dataset="aime-2024")
    base = run_simulation(r1, spec, seed=2).summary
    mtp = run_simulation(dataclasses.replace(r1, speculative_method="deepseek_mtp", num_speculative_tokens=1,
                                             spec_acceptance_rate=0.8), spec, seed=2).summary
    assert mtp["config"]["deployment"]["speculative_method"] == "mtp"
    assert mtp["tpot_s"]["mean"] < base["tpot_s"]["mean"]
    assert mtp["speculative"]["given"]["mean_acceptance_length"] == pytest.approx(1.8)


def test_mtp_on_a_model_without_mtp_layers_is_refused():
    kimi = load_model("kimi-k2-thinking")
    with pytest.raises(ConfigError, match="kimi-k2-thinking has none") as caught:
        Deployment(model=kimi, gpu=load_gpu("h200"), tp=8, speculative_method="mtp", num_speculative_tokens=1)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="multi-token-prediction"):
        small_deployment(speculative_method="mtp", num_speculative_tokens=1)


def test_mtp_tokens_may_exceed_the_layers_when_vllm_can_cycle_them(r1):
    assert dataclasses.replace(r1, speculative_method="mtp", num_speculative_tokens=3).num_speculative_tokens == 3
    minimax = Deployment(model=load_model("minimax-m2.5"), gpu=load_gpu("h200"), tp=4)
    for k in (1, 3, 6):
        dataclasses.replace(minimax, speculative_method="mtp", num_speculative_tokens=k)
    with pytest.raises(ConfigError, match="multiple of the 3 MTP layers"):
        dataclasses.replace(minimax, speculative_method="mtp", num_speculative_tokens=4)


def test_vllm_method_names_and_aliases():
    draft = load_model("deepseek-r1-distill-qwen-1.5b")
    assert small_deployment(speculative_method="draft", num_speculative_tokens=2,
                            draft_model=draft).speculative_method == "draft_model"
    with pytest.raises(ConfigError, match="one of ngram, draft_model, eagle, eagle3, mtp"):
        small_deployment(speculative_method="medusa", num_speculative_tokens=2)


def test_eagle3_head_costs_a_little_more_than_eagle():
    base = Deployment(model=load_model("llama-3.1-8b-instruct"), gpu=load_gpu("h100-sxm"))
    eagle, eagle3 = (dataclasses.replace(base, speculative_method=m, num_speculative_tokens=3)
                     for m in ("eagle", "eagle3"))
    h = base.model.hidden_size
    widened_qkv = h * (base.model.q_size + 2 * base.model.kv_size)
    assert eagle3.weight_bytes_per_gpu - eagle.weight_bytes_per_gpu == pytest.approx(2.0 * (h * h + widened_qkv))
    step = StepFeatures.decode_only(np.array([1, 64, 256]), np.array([4000, 256_000, 1_000_000]), tokens_per_seq=4)
    target = LinearCostModel()
    plain = target.step_time(step)
    t_eagle = speculative_cost_model(target, eagle).step_time(step) - plain
    t_eagle3 = speculative_cost_model(target, eagle3).step_time(step) - plain
    assert (t_eagle3 > t_eagle).all() and (t_eagle3 < 1.5 * t_eagle).all()
    assert (speculative_cost_model(target, dataclasses.replace(eagle, speculative_method="ngram"))
            .step_time(step) == plain).all()


def test_drafter_runs_over_prefill_tokens_too():
    """vLLM's proposers make their first pass over every token the target ran, prompts included."""
    dep = small_deployment(speculative_method="eagle", num_speculative_tokens=2)
    model = speculative_cost_model(LinearCostModel(), dep)
    rows = [StepFeatures.one_step((p, 1, p * p // 2, p, 1, 3, 500)) for p in (16, 2048)]  # a chunk + one decode
    extra = [float(model.step_time(r)[0] - LinearCostModel().step_time(r)[0]) for r in rows]
    assert extra[1] > extra[0] > 0


@pytest.mark.parametrize("flags, needle", [
    (["--speculative-method", "mtp"], "has none"),
    (["--speculative-method", "ngram", "--acceptance-rate", "0.6", "--mean-acceptance-length", "3"], "not both"),
    (["--speculative-method", "ngram", "--mean-acceptance-length", "9"], "spec_mean_acceptance_length"),
    (["--speculative-method", "ngram", "--acceptance-rate", "60"], "spec_acceptance_rate"),
])
def test_cli_refuses_bad_speculative_flags_in_one_line(flags, needle, tmp_path):
    result = CliRunner().invoke(main, ["simulate", "--num-requests", "2", "--out", str(tmp_path / "r"), *flags])
    assert result.exit_code == 2, result.output
    assert needle in result.output


@pytest.mark.parametrize("method, k", [("mtp", 2), ("eagle3", 3)])
def test_fast_forward_equals_step_by_step_with_a_moe_drafter(r1, method, k):
    """DeepSeek-R1's MTP module is an MoE layer, costed on the roofline's general path: fast-forwarded
    runs must still give the bits of stepping one step at a time."""
    dep = dataclasses.replace(r1, speculative_method=method, num_speculative_tokens=k, spec_acceptance_rate=0.55)
    rng = np.random.default_rng(4)
    n = 12
    table = make_request_table(np.cumsum(rng.uniform(0, 2.0, n)), rng.integers(50, 2000, n), rng.integers(20, 600, n), "t")
    fast = run_simulation(dep, table, seed=9).requests
    slow = run_simulation(dep, table, seed=9, fast_forward=False).requests
    for column in ("first_scheduled_s", "first_token_s", "finish_s"):
        np.testing.assert_array_equal(fast[column].to_numpy(), slow[column].to_numpy(), err_msg=column)
    assert (fast["output_tokens"] == slow["output_tokens"]).all()


def test_the_drafter_layers_take_blocks_of_the_same_kv_pool():
    """vLLM's KV cache spec lists every attention layer of the engine, the drafter's included: a
    block holds block_size tokens of the target's layers and of the drafter's."""
    from rllmsim.deployment import Deployment
    from rllmsim.specs import load_gpu, load_model

    target, gpu = load_model("deepseek-r1-distill-qwen-7b"), load_gpu("h100-sxm")
    plain = Deployment(model=target, gpu=gpu)
    eagle = Deployment(model=target, gpu=gpu, speculative_method="eagle", num_speculative_tokens=3)
    draft = Deployment(model=target, gpu=gpu, speculative_method="draft_model", num_speculative_tokens=3,
                       draft_model=load_model("deepseek-r1-distill-qwen-1.5b"))
    ngram = Deployment(model=target, gpu=gpu, speculative_method="ngram", num_speculative_tokens=3)
    # by hand: Qwen2-7B: 28 layers x 4 KV heads x 128 x (K, V) x 2 bytes = 57,344 B per token;
    # an EAGLE head is one such layer (2,048 B); the 1.5B draft 28 layers x 2 KV heads (28,672 B)
    assert plain.kv_bytes_per_token_per_gpu == eagle.kv_bytes_per_token_per_gpu == 57344
    assert (eagle.drafter_kv_bytes_per_token_per_gpu, draft.drafter_kv_bytes_per_token_per_gpu) == (2048, 28672)
    assert ngram.drafter_kv_bytes_per_token_per_gpu == 0 and ngram.num_gpu_blocks == plain.num_gpu_blocks
    for d, per_token in ((eagle, 57344 + 2048), (draft, 57344 + 28672)):
        assert d.kv_block_bytes == 16 * per_token
        assert d.num_gpu_blocks == int(d.kv_budget_bytes // (16 * per_token))
    assert draft.num_gpu_blocks < eagle.num_gpu_blocks < plain.num_gpu_blocks
    # DeepSeek-R1's MTP module is one MLA layer: its latent (512 + 64) x 2 bytes beside the 61 layers'
    r1 = Deployment(model=load_model("deepseek-r1"), gpu=load_gpu("h200"), tp=8, speculative_method="mtp",
                    num_speculative_tokens=1)
    assert (r1.kv_bytes_per_token_per_gpu, r1.drafter_kv_bytes_per_token_per_gpu) == (61 * 1152, 1152)
