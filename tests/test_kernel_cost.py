"""The op-level kernel cost model: lookups, op sums, host overlap, fallbacks and importers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from rllmsim.cost.features import BatchShape, StepFeatures
from rllmsim.cost.kernels.host import HostParams
from rllmsim.cost.kernels.lookup import Curve, GemmGrid, Grid
from rllmsim.cost.kernels.model import KernelCostModel
from rllmsim.cost.kernels.tables import KernelTables, shipped_gpus, shipped_tables
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.cost.select import cost_model_for
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.specs import load_gpu, load_model


def _deployment(model: str = "qwen3-32b", gpu: str = "h100-sxm", **kw) -> Deployment:
    return Deployment(model=load_model(model), gpu=load_gpu(gpu), **kw)


# -- lookups -------------------------------------------------------------------------------------
def test_curve_is_exact_at_grid_points_and_monotone_between_them() -> None:
    x = np.array([1, 2, 4, 8, 64, 512], dtype=float)
    y = np.array([10.0, 10.5, 11.0, 14.0, 60.0, 400.0])
    curve = Curve.from_points(x, y)
    assert curve(x).tolist() == pytest.approx(y.tolist(), rel=1e-12)
    q = np.linspace(1, 512, 5000)
    values = curve(q)
    assert np.all(np.diff(values) >= -1e-12)
    # between two points the value stays between theirs
    i = np.searchsorted(x, q, side="right").clip(1, len(x) - 1)
    assert np.all((values >= y[i - 1] - 1e-9) & (values <= y[i] + 1e-9))


def test_curve_extrapolates_linearly_above_and_floors_below() -> None:
    curve = Curve.from_points(np.array([16.0, 32.0]), np.array([5.0, 9.0]))
    assert curve(np.array([64.0, 128.0])).tolist() == [18.0, 36.0]  # edge efficiency kept
    assert curve(np.array([1.0, 8.0])).tolist() == [5.0, 5.0]
    assert curve.outside(np.array([32.0, 33.0])).tolist() == [False, True]


def test_grid_rows_of_different_extent_and_log_interpolation_between_rows() -> None:
    grid = Grid.from_points(np.array([1, 1, 1, 4, 4]), np.array([10, 100, 1000, 10, 100]),
                            np.array([1.0, 2.0, 8.0, 4.0, 8.0]))
    assert float(grid.at_row(4.0, 100.0)) == pytest.approx(8.0)
    assert float(grid.at_row(2.0, 100.0)) == pytest.approx(4.0)  # geometric mean halfway in log(rows)
    assert bool(grid.outside(4.0, 1000.0)) and not bool(grid.outside(1.0, 1000.0))


def test_gemm_grid_exact_at_measured_shapes_and_bilinear_between() -> None:
    m, n, k = np.meshgrid([1, 64, 4096], [1024, 4096], [1024, 4096], indexing="ij")
    latency = 1.0 + m * n * k / 1e9
    grid = GemmGrid(m.ravel(), n.ravel(), k.ravel(), latency.ravel())
    curve, outside = grid.curve(4096, 1024)
    assert not outside
    assert curve(np.array([1.0, 64.0, 4096.0])).tolist() == pytest.approx(latency[:, 1, 0].tolist())
    mid, _ = grid.curve(2048, 1024)
    low, high = grid.curve(1024, 1024)[0], grid.curve(4096, 1024)[0]
    assert np.all((low(np.array([4096.0])) < mid(np.array([4096.0]))) & (mid(np.array([4096.0])) < high(np.array([4096.0]))))
    wide, outside = grid.curve(8192, 1024)
    assert outside and wide(np.array([4096.0]))[0] == pytest.approx(2 * latency[2, 1, 0])


# -- the model -----------------------------------------------------------------------------------
def test_shipped_tables_cover_the_gpus_people_plan_for() -> None:
    assert {"a100-80gb", "h100-sxm", "h200", "b200", "b300", "gb200", "gb300", "l40s",
            "rtx-pro-6000", "rtx-4090"} <= set(shipped_gpus())


def test_step_time_is_the_sum_of_its_op_lookups_plus_host_time() -> None:
    d = _deployment(tp=2, async_scheduling=False)
    model = KernelCostModel(d, shipped_tables("h100-sxm"))
    parts = model.breakdown(prefill_tokens=0, prefill_context=0, decode_seqs=32, decode_context=2000)
    step = model.step_time(StepFeatures.from_shapes([BatchShape(decode_contexts=(2000,) * 32)]))[0]
    assert step == pytest.approx(sum(parts.values()), rel=1e-12)
    assert parts["host"] == pytest.approx(2.5e-3 + 32 * 12e-6)
    assert {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "allreduce", "lm_head", "decode_attention"} <= set(parts)


def test_async_scheduling_is_never_slower_and_hides_host_time_behind_the_gpu() -> None:
    rng = np.random.default_rng(3)
    shapes = [BatchShape(prefill_chunks=tuple((int(c), int(x)) for c, x in rng.integers(1, 3000, (rng.integers(0, 2), 2))),
                         decode_contexts=tuple(int(x) for x in rng.integers(1, 20000, rng.integers(1, 200))))
              for _ in range(100)]
    f = StepFeatures.from_shapes(shapes)
    on = KernelCostModel(_deployment(tp=2, async_scheduling=True), shipped_tables("h100-sxm")).step_time(f)
    off = KernelCostModel(_deployment(tp=2, async_scheduling=False), shipped_tables("h100-sxm")).step_time(f)
    assert np.all(on <= off)
    host = HostParams().seconds(f.prefill_seqs + f.decode_seqs, f.total_tokens)
    assert np.allclose(off - on, np.minimum(off - host, host))  # on = max(gpu, host), off = gpu + host


def test_vllm_version_sets_the_async_default() -> None:
    assert _deployment(tp=2, vllm_version="0.12.0").async_scheduling is False
    assert _deployment(tp=2, vllm_version="0.19.0").async_scheduling is True
    assert _deployment(tp=2, vllm_version="0.19.0", async_scheduling=False).async_scheduling is False


@pytest.mark.parametrize("model, gpu, tp", [("deepseek-r1-distill-qwen-7b", "h100-sxm", 1),
                                            ("qwen3-32b", "rtx-pro-6000", 2),  # a layer profile
                                            ("qwen3-30b-a3b", "h200", 1)])  # fused MoE table
def test_decode_run_costs_each_step_as_it_costs_alone(model: str, gpu: str, tp: int) -> None:
    """Fast-forward costs a run in one call: every step must get the bits it gets alone."""
    cost = cost_model_for(_deployment(model, gpu, tp=tp), "kernels")
    contexts = np.array([37 * 1000 + 41 * m for m in range(60)], dtype=np.int64)
    run = cost.step_time(StepFeatures.decode_run(37, contexts))
    alone = [cost.step_time(StepFeatures.from_shapes([BatchShape(decode_contexts=(int(c) - 36 * 10,) + (10,) * 36)]))[0]
             for c in contexts]
    assert run.tolist() == alone


def test_eager_mode_and_graph_padding_change_decode_costs() -> None:
    """A small model's decode kernels are shorter than the CPU takes to launch them one by one."""
    graphed = KernelCostModel(_deployment("deepseek-r1-distill-qwen-1.5b", async_scheduling=False), shipped_tables("h100-sxm"))
    eager = KernelCostModel(_deployment("deepseek-r1-distill-qwen-1.5b", async_scheduling=False, enforce_eager=True), shipped_tables("h100-sxm"))
    f = StepFeatures.from_shapes([BatchShape(decode_contexts=(500,) * 3)])
    assert eager.step_time(f)[0] > graphed.step_time(f)[0]
    # a graphed batch of 3 runs padded to the capture size 4
    assert graphed.breakdown(0, 0, 3, 500)["qkv_proj"] == graphed.breakdown(0, 0, 4, 500)["qkv_proj"]
    assert eager.breakdown(0, 0, 3, 500)["qkv_proj"] != eager.breakdown(0, 0, 4, 500)["qkv_proj"]


def test_a_gpu_without_tables_gets_the_fitted_roofline_and_says_so() -> None:
    cost = cost_model_for(_deployment("qwen3-8b", "l4", max_model_len=8192))
    assert isinstance(cost, KernelCostModel)  # on tables synthesised by kernels/fitted.py
    assert cost.provenance()["tables"]["location"].startswith("fitted roofline (no kernel tables for l4")
    assert isinstance(cost_model_for(_deployment("qwen3-8b", "l4", max_model_len=8192), "roofline"), RooflineCostModel)
    with pytest.raises(ConfigError, match="no kernel tables for l4"):  # measured kernels asked for
        cost_model_for(_deployment("qwen3-8b", "l4", max_model_len=8192), "kernels")


def test_default_is_the_kernel_model_where_tables_exist_and_names_them() -> None:
    cost = cost_model_for(_deployment("qwen3-32b", "rtx-pro-6000", tp=2))
    prov = cost.provenance()
    assert prov["kind"] == "kernels"
    assert prov["ops"]["linear"].startswith("layer profile Qwen--Qwen3-32B-tp2")
    assert prov["tables"]["sources"][0]["repository"] == "ai-dynamo/aiconfigurator"
    cost.step_time(StepFeatures.decode_run(8, np.array([8 * 500, 8 * 200_000])))
    assert 0 < cost.provenance()["extrapolated_share"] < 1  # 200k tokens of context lie beyond the grid


# -- tables as data ------------------------------------------------------------------------------
def _tiny_tables() -> KernelTables:
    m, n, k = np.meshgrid([1, 8, 64, 512, 4096], [256, 512, 1024, 2048, 4096, 8192], [256, 512, 1024, 2048, 4096],
                          indexing="ij")
    gemm = pd.DataFrame({"dtype": "bfloat16", "m": m.ravel(), "n": n.ravel(), "k": k.ravel(),
                         "latency_us": 3.0 + m.ravel() * n.ravel() * k.ravel() / 4e8})
    batch, ctx = np.meshgrid([1, 8, 64, 512], [16, 256, 4096, 65536], indexing="ij")
    attention = {"batch": batch.ravel(), "heads": 16, "kv_heads": 4, "head_dim": 128, "kv_dtype": "bfloat16",
                 "window": 0, "latency_us": 5.0 + batch.ravel() * ctx.ravel() / 1e4}
    generation = pd.DataFrame({**attention, "context": ctx.ravel()})
    context = pd.DataFrame({**attention, "isl": ctx.ravel()})
    allreduce = pd.DataFrame({"impl": "nccl", "num_gpus": 2, "bytes": [1024, 1 << 20, 1 << 26],
                              "latency_us": [8.0, 40.0, 2000.0]})
    return KernelTables({"gemm": gemm, "generation_attention": generation, "context_attention": context,
                         "allreduce": allreduce}, {"source": "hand-made", "device": "test GPU"})


def test_tables_round_trip_through_their_folder(tmp_path) -> None:
    tables = _tiny_tables()
    tables.save(tmp_path / "gpu")
    loaded = KernelTables.load(tmp_path / "gpu")
    assert loaded.meta["device"] == "test GPU"
    for name, frame in tables.tables.items():
        pd.testing.assert_frame_equal(loaded.tables[name][frame.columns].reset_index(drop=True),
                                      frame.reset_index(drop=True), check_dtype=False)
    d = _deployment("qwen3-8b", "l4", tp=2)  # 32 heads / 8 KV heads: 16 and 4 per GPU at TP 2
    from_disk = cost_model_for(d, "kernels", kernel_tables=tmp_path / "gpu")
    in_memory = KernelCostModel(d, tables)
    f = StepFeatures.from_shapes([BatchShape(prefill_chunks=((700, 0),), decode_contexts=(900,) * 5)])
    assert from_disk.step_time(f).tolist() == in_memory.step_time(f).tolist()


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "gemm.parquet").write_bytes(b"not parquet"), "not a readable parquet"),
    (lambda root: pd.DataFrame({"dtype": ["bfloat16"], "m": [1], "n": [2], "k": [3], "latency_us": [-1.0]})
     .to_parquet(root / "gemm.parquet"), "latency_us has out-of-range"),
    (lambda root: (root / "tables.json").write_text("[1, 2]"), "must hold a JSON object"),
])
def test_damaged_tables_end_in_one_clear_error(tmp_path, damage, message) -> None:
    _tiny_tables().save(tmp_path / "gpu")
    damage(tmp_path / "gpu")
    with pytest.raises(ConfigError, match=message):
        KernelTables.load(tmp_path / "gpu")


def test_llmservingsim_importer_reads_a_layer_profile(tmp_path) -> None:
    from rllmsim.cost.kernels.importers.llmservingsim import import_gpu

    folder = tmp_path / "GPU" / "meta-llama" / "Llama-3.1-8B" / "bf16"
    (folder / "tp2").mkdir(parents=True)
    (folder / "meta.yaml").write_text(
        "vllm_version: 0.19.0\ngpu: Test GPU\nmodel: meta-llama/Llama-3.1-8B\ntp_degrees: [1, 2]\n"
        "engine_effective:\n  enforce_eager: true\n  hf_overrides:\n    num_attention_heads: 16\n"
        "    num_key_value_heads: 4\n")
    pd.DataFrame({"layer": ["qkv_proj", "qkv_proj"], "tokens": [1, 64], "time_us": [20.0, 25.0]}).to_csv(
        folder / "tp2" / "dense.csv", index=False)
    pd.DataFrame({"prefill_chunk": [0, 16], "kv_prefill": [0, 0], "n_decode": [1, 0], "kv_decode": [16, 0],
                  "time_us": [7.0, 8.0]}).to_csv(folder / "tp2" / "attention.csv", index=False)
    pd.DataFrame({"layer": ["lm_head"], "sequences": [1], "time_us": [300.0]}).to_csv(
        folder / "tp2" / "per_sequence.csv", index=False)
    (profile,) = import_gpu(tmp_path / "GPU")
    assert (profile.meta["hf_id"], profile.meta["tp"], profile.meta["heads"], profile.meta["kv_heads"]) == \
        ("meta-llama/Llama-3.1-8B", 2, 16, 4)
    tables = KernelTables({}, {"source": "test"}, [profile])
    tables.save(tmp_path / "out")
    again = KernelTables.load(tmp_path / "out").profile_for("meta-llama/llama-3.1-8b", 2)
    assert again is not None and again.tables["linear"]["latency_us"].tolist() == [20.0, 25.0]



def test_mixed_grid_is_exact_at_measured_points_and_replaces_the_sum_where_measured() -> None:
    from rllmsim.cost.kernels.lookup import MixedGrid

    chunk, ctx, seqs, kv = (np.array(v, dtype=float) for v in np.meshgrid([16, 256], [16, 4096], [1, 64], [16, 4096],
                                                                           indexing="ij"))
    latency = 10.0 + chunk * ctx / 1e4 + seqs * kv / 1e3
    grid = MixedGrid(chunk.ravel(), ctx.ravel(), seqs.ravel(), kv.ravel(), latency.ravel())
    us, outside = grid(256.0, 4096.0, 64.0, 4096.0)
    assert us == pytest.approx(10.0 + 256 * 4096 / 1e4 + 64 * 4096 / 1e3) and not outside
    low, _ = grid(16.0, 4096.0, 64.0, 4096.0)
    mid, _ = grid(64.0, 4096.0, 64.0, 4096.0)
    assert low < mid < us
    # the shipped layer profile measured mixed calls: a step with a chunk and 127 decodes uses them
    cost = cost_model_for(_deployment("llama-3.1-8b", "rtx-pro-6000", max_num_seqs=128, max_num_batched_tokens=2048),
                          "kernels")
    parts = cost.breakdown(prefill_tokens=1024, prefill_context=0, decode_seqs=127, decode_context=1100)
    apart = cost.breakdown(0, 0, 127, 1100)["decode_attention"] + cost.breakdown(1024, 0, 0, 0)["prefill_attention"]
    assert "mixed_attention" in parts and parts["mixed_attention"] > apart


def test_fp8_linears_pay_for_quantizing_their_activations() -> None:
    fp8 = KernelCostModel(_deployment("llama-3.1-70b", tp=4, quantization="fp8", max_model_len=8192),
                          shipped_tables("h100-sxm"))
    bf16 = KernelCostModel(_deployment("llama-3.1-70b", tp=4, max_model_len=8192), shipped_tables("h100-sxm"))
    parts = fp8.breakdown(0, 0, 8, 1500)
    assert parts["activation_quant"] > 0 and "activation_quant" not in bf16.breakdown(0, 0, 8, 1500)
    assert parts["gate_up_proj"] < bf16.breakdown(0, 0, 8, 1500)["gate_up_proj"]  # fp8 GEMMs read half the bytes


def test_all_reduce_is_vllms_own_dispatch_unless_custom_all_reduce_is_disabled() -> None:
    d = _deployment(tp=2)
    measured = KernelCostModel(d, shipped_tables("h100-sxm"))
    nccl = KernelCostModel(_deployment(tp=2, disable_custom_all_reduce=True), shipped_tables("h100-sxm"))
    assert measured.ops.sources["allreduce"].startswith("vLLM all-reduce") and nccl.ops.sources["allreduce"] == "NCCL"
    # message sizes are bytes of bf16 hidden states: 8 tokens x 5120 x 2 = 80 KiB, two per layer
    table = shipped_tables("h100-sxm").table("allreduce")
    rows = table[(table["impl"] == "vllm_graph") & (table["num_gpus"] == 2)]
    expected = 2 * 64 * Curve.from_points(rows["bytes"].to_numpy(), rows["latency_us"].to_numpy())(8 * 5120 * 2) * 1e-6
    assert measured.breakdown(0, 0, 8, 1000)["allreduce"] == pytest.approx(float(expected))


def test_expert_parallel_moe_uses_the_ep_measurements_and_needs_a_moe_model() -> None:
    d = _deployment("minimax-m2.5", tp=4, quantization="fp8", max_model_len=8192)
    ep = dataclasses.replace(d, enable_expert_parallel=True)
    table = shipped_tables("h100-sxm").table("moe")
    rows = table[(table["dtype"] == "fp8_block") & (table["hidden"] == 3072) & (table["experts"] == 256)
                 & (table["tp"] == 1) & (table["ep"] == 4) & (table["tokens"] == 4)]
    measured = float(rows["latency_us"].iloc[0]) * 62 * 1e-6  # 62 MoE layers
    assert KernelCostModel(ep, shipped_tables("h100-sxm")).breakdown(0, 0, 4, 1000)["moe"] == pytest.approx(measured)
    assert KernelCostModel(d, shipped_tables("h100-sxm")).breakdown(0, 0, 4, 1000)["moe"] != pytest.approx(measured)
    with pytest.raises(ConfigError, match="enable_expert_parallel needs a mixture-of-experts model"):
        _deployment("qwen3-8b", enable_expert_parallel=True, max_model_len=8192)
