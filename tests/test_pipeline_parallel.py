"""Pipeline parallelism (`rllmsim.pipeline`, `rllmsim.engine.pipeline_replica`): stages, memory,
micro-batches in flight, and vLLM's refusals."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from rllmsim import pipeline
from rllmsim.cli import main
from rllmsim.cost.features import StepFeatures
from rllmsim.cost.kernels.model import KernelCostModel
from rllmsim.cost.kernels.tables import shipped_tables
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.simulation import run_simulation
from rllmsim.specs import load_gpu, load_model
from rllmsim.workload.table import make_request_table

from engine_helpers import small_deployment

HOST_S, GPU_S = 1e-3, 10e-3


class FixedStepCost:
    """Every step takes HOST_S on the host and GPU_S on the GPU (before the stages share it)."""

    def step_time(self, f: StepFeatures) -> np.ndarray:
        return np.full(len(f), HOST_S + GPU_S)

    def host_seconds(self, f: StepFeatures) -> np.ndarray:
        return np.full(len(f), HOST_S)

    def provenance(self) -> dict:
        return {"kind": "fixed-test"}


def simulate(deployment: Deployment, arrivals, prompts, outputs, cost_model=None, fast_forward: bool = True):
    table = make_request_table(np.asarray(arrivals, dtype=float), prompts, outputs, "pp")
    return run_simulation(deployment, table, cost_model=cost_model or FixedStepCost(), fast_forward=fast_forward)


def hop_s(tokens: int, hidden: int, gbps: float) -> float:
    """One NVLink crossing by hand: hidden states and residual in bf16, at 70 % of the link, plus
    the 8 us fixed cost of one collective."""
    return 8e-6 + tokens * 2 * 2 * hidden / (gbps * 1e9 * 0.7)


def test_layers_split_as_vllm_get_pp_indices():
    assert pipeline.stage_layers(61, 2) == [31, 30]
    assert pipeline.stage_layers(64, 3) == [21, 22, 21]
    assert pipeline.stage_layers(62, 4) == [15, 16, 16, 15]
    assert sum(pipeline.stage_layers(94, 8)) == 94


def test_kv_capacity_follows_the_fullest_stage_by_hand():
    """Qwen3-32B on H100, TP 1, PP 2: each stage holds 32 of 64 layers, so a block of 16 tokens
    is 16 x 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes; the stage's GPU holds half the
    layer weights plus the embedding (the last stage, the lm_head: the same size)."""
    model, gpu = load_model("qwen3-32b"), load_gpu("h100-sxm")
    one = Deployment(model=model, gpu=gpu, tp=2, max_model_len=16384)
    two = Deployment(model=model, gpu=gpu, tp=1, pipeline_parallel_size=2, max_model_len=16384)
    assert two.kv_block_bytes == 16 * 32 * 8 * 128 * 2 * 2
    embedding = model.embedding_params * 2
    layers = two.weight_bytes_per_tp_gpu - 2 * embedding
    assert two.weight_bytes_per_gpu == pytest.approx(layers / 2 + embedding)
    assert two.num_gpu_blocks == int(two.kv_budget_bytes // two.kv_block_bytes)
    # the same four GPUs' worth of memory by either split: TP 2 splits the KV heads, PP 2 the layers
    assert one.kv_block_bytes == two.kv_block_bytes
    assert two.gpus_per_replica == 2 and two.async_scheduling is False


def test_one_request_crosses_both_stages_every_token():
    """PP 2, one request: each micro-batch costs the host time, half the GPU time on each stage
    and one crossing between them; the request waits for each to return before its next token."""
    d = small_deployment(pipeline_parallel_size=2)
    hidden, gbps = d.model.hidden_size, d.gpu.interconnect_gbps
    out = simulate(d, [0.0], [100], [5]).requests
    first = HOST_S + GPU_S + hop_s(100, hidden, gbps)
    assert out["first_token_s"][0] == pytest.approx(first, rel=1e-12)
    assert out["finish_s"][0] == pytest.approx(first + 4 * (HOST_S + GPU_S + hop_s(1, hidden, gbps)), rel=1e-12)


def test_the_summary_shows_each_stage_busy_for_its_share_of_the_span():
    """One request: five micro-batches (its prefill and four decodes), each keeping each stage
    busy for half the GPU time, one after the other: the rest of the span is the bubble."""
    d = small_deployment(pipeline_parallel_size=2)
    hidden, gbps = d.model.hidden_size, d.gpu.interconnect_gbps
    pipe = simulate(d, [0.0], [100], [5]).summary["pipeline"]
    span = HOST_S + GPU_S + hop_s(100, hidden, gbps) + 4 * (HOST_S + GPU_S + hop_s(1, hidden, gbps))
    assert pipe["micro_batches"] == 5 and pipe["mean_micro_batch_seqs"] == 1.0
    assert pipe["stage_busy_share"] == pytest.approx([5 * GPU_S / 2 / span] * 2, rel=1e-12)
    assert pipe["bubble_share"] == pytest.approx(1 - 5 * GPU_S / 2 / span, rel=1e-12)


def test_a_second_micro_batch_fills_the_idle_stage():
    """B arrives while A's prefill is on stage 0; the engine core schedules B's prefill as the
    second micro-batch, which waits for stage 0 and then follows A through the stages. From then
    on A and B alternate, each crossing both stages per token: A finishes as it would alone, and
    B's tokens come every host + GPU + crossing too, not after A's."""
    d = small_deployment(pipeline_parallel_size=2)
    hidden, gbps = d.model.hidden_size, d.gpu.interconnect_gbps
    alone = simulate(d, [0.0], [100], [5]).requests
    pair = simulate(d, [0.0, 0.5e-3], [100, 100], [5, 5]).requests
    hop_prefill, hop_decode = hop_s(100, hidden, gbps), hop_s(1, hidden, gbps)
    assert pair["finish_s"][0] == pytest.approx(alone["finish_s"][0], rel=1e-12)
    b_first = HOST_S + GPU_S / 2 + GPU_S / 2 + hop_prefill + GPU_S / 2  # behind A on both stages
    assert pair["first_token_s"][1] == pytest.approx(b_first, rel=1e-12)
    assert pair["finish_s"][1] == pytest.approx(b_first + 4 * (HOST_S + GPU_S + hop_decode), rel=1e-12)


def test_a_long_prompt_is_pipelined_chunk_after_chunk():
    """A 3-chunk prompt: chunk 2 is scheduled as soon as chunk 1 launched (vLLM advances
    computed tokens at schedule time), chunk 3 when the first micro-batch returns."""
    d = small_deployment(pipeline_parallel_size=2, budget=256)
    hidden, gbps = d.model.hidden_size, d.gpu.interconnect_gbps
    hop = hop_s(256, hidden, gbps)
    out = simulate(d, [0.0], [768], [2]).requests
    b1_end = HOST_S + GPU_S + hop
    b2_end = max(2 * HOST_S, HOST_S + GPU_S / 2) + GPU_S / 2 + hop + GPU_S / 2
    b3_launch = b1_end + HOST_S
    b3_stage0_end = max(b3_launch, b2_end - hop - GPU_S / 2) + GPU_S / 2
    b3_end = max(b3_stage0_end + hop, b2_end) + GPU_S / 2
    assert out["first_token_s"][0] == pytest.approx(b3_end, rel=1e-12)


@pytest.mark.parametrize("cost", ["roofline", "kernels"])
def test_invariants_under_kv_pressure(cost):
    """A small pool forces preemptions of sequences in flight: every request still completes
    with exactly its tokens, blocks never exceed the pool, timeline rows never overlap, and the
    fast-forward flag changes nothing (pipeline replicas always step)."""
    d = small_deployment(blocks=40, pipeline_parallel_size=2, max_num_seqs=8, budget=128, max_model_len=512)
    model = RooflineCostModel(d) if cost == "roofline" else KernelCostModel(d, shipped_tables("h100-sxm"))
    rng = np.random.default_rng(7)
    n = 30
    arrivals = np.sort(rng.uniform(0, 0.5, n))
    prompts, outputs = rng.integers(20, 200, n), rng.integers(20, 300, n)
    run = simulate(d, arrivals, prompts, outputs, cost_model=model)
    req = run.requests
    assert req["finish_s"].notna().all() and (req["output_tokens"].to_numpy() == outputs).all()
    assert (req["first_token_s"] >= req["arrival_s"]).all() and (req["finish_s"] >= req["first_token_s"]).all()
    assert int(req["preemptions"].sum()) > 0
    timeline = run.result.timeline
    assert (timeline["kv_blocks_peak"] <= 40).all()
    assert (timeline["start_s"].to_numpy()[1:] >= timeline["end_s"].to_numpy()[:-1] - 1e-12).all()
    again = simulate(d, arrivals, prompts, outputs, cost_model=model, fast_forward=False).requests
    assert np.array_equal(req["finish_s"].to_numpy(), again["finish_s"].to_numpy())


@pytest.mark.parametrize("knobs, field", [
    (dict(pipeline_parallel_size=0), "pipeline_parallel_size must be an integer >= 1"),
    (dict(pipeline_parallel_size=99), "is more than the 28 layers"),
    (dict(pipeline_parallel_size=2, async_scheduling=True), "--async-scheduling"),
    (dict(pipeline_parallel_size=2, speculative_method="ngram", num_speculative_tokens=2), "speculative decoding"),
])
def test_refused_layouts_name_the_field_and_the_fix(knobs, field):
    with pytest.raises(ConfigError, match=field):
        small_deployment(**knobs)


def test_sliding_window_models_are_refused_with_pipeline_stages():
    with pytest.raises(ConfigError, match="sliding-window layers of gpt-oss-120b"):
        Deployment(model=load_model("gpt-oss-120b"), gpu=load_gpu("h100-sxm"), pipeline_parallel_size=2)


def test_cli_takes_vllms_flag_and_refuses_bad_values_in_one_line(tmp_path):
    runner = CliRunner()
    base = ["simulate", "--model", "deepseek-r1-distill-qwen-1.5b", "--gpu", "h100-sxm", "--num-requests", "6",
            "--rate", "2", "--max-tokens", "64", "--out", str(tmp_path / "run")]
    ok = runner.invoke(main, base + ["--pipeline-parallel-size", "2"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(main, base + ["-pp", "0"])
    assert bad.exit_code == 2
    assert "pipeline_parallel_size must be an integer >= 1" in bad.output and "Traceback" not in bad.output
