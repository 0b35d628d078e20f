"""Disaggregated serving through the CLI and the API: pool flags, the KV link, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_input_helpers import COMPARE, SIMULATE, assert_refused, run_in
from rllmsim.api.simulate import prepare

POOLS = ["--prefill-replicas", "1", "--decode-replicas", "2"]


@pytest.mark.parametrize("args, names", [
    (["--prefill-replicas", "1"], "--decode-replicas"),
    (["--decode-replicas", "2"], "--prefill-replicas"),
    (["--prefill-replicas", "0", "--decode-replicas", "1"], "--prefill-replicas"),
    (["--decode-tp", "2"], "--decode-tp"),
    (["--kv-transfer-gbps", "100"], "--kv-transfer-gbps"),
    ([*POOLS, "--replicas", "2"], "--replicas"),
    ([*POOLS, "--kv-transfer-gbps", "0"], "--kv-transfer-gbps"),
    ([*POOLS, "--kv-transfer-latency-ms", "-1"], "--kv-transfer-latency-ms"),
    ([*POOLS, "--kv-transfer", "pigeon"], "--kv-transfer"),
    ([*POOLS, "--decode-tp", "3"], ("decode pool", "tp")),
    ([*POOLS, "--prefill-gpu", "h999"], "h999"),
    ([*POOLS, "--cost-model", "calibration/none.json"], "--cost-model"),
])
def test_bad_pool_flags_are_one_line(tmp_path: Path, args: list[str], names) -> None:
    assert_refused(tmp_path, [*SIMULATE, "--out", tmp_path / "run", *args], names)


def test_a_bad_pool_flag_in_a_variant_names_the_variant(tmp_path: Path) -> None:
    assert_refused(tmp_path, [*COMPARE[:-5], "--variant", "baseline:", "--variant", "pd:--prefill-replicas=1",
                              "--no-html"], "--variant pd")


def test_pool_flags_default_to_the_shared_ones_and_override_one_pool() -> None:
    sim = prepare(model="deepseek-r1-distill-qwen-7b", gpu="h100", tp=2, max_num_seqs=64, prefill_replicas=1,
                  decode_replicas=3, decode_tp=1, decode_gpu="h200", kv_transfer="nvlink")
    pools = sim.disaggregation
    assert (pools.prefill.replicas, pools.prefill.tp, pools.prefill.gpu.name) == (1, 2, "h100-sxm")
    assert (pools.decode.replicas, pools.decode.tp, pools.decode.gpu.name) == (3, 1, "h200")
    assert pools.prefill.max_num_seqs == pools.decode.max_num_seqs == 64
    assert pools.transfer.gbps == 8 * 450  # NVLink 4: 450 GB/s per direction on both GPUs
    assert pools.gpus == 1 * 2 + 3 * 1


def test_simulate_and_compare_run_disaggregated(tmp_path: Path) -> None:
    result = run_in(tmp_path, [*SIMULATE, *POOLS, "--kv-transfer", "tcp", "--out", tmp_path / "run"])
    assert result.exit_code == 0, result.output
    assert "Disaggregated (1P x TP1 / 2D x TP1)" in result.output and "Mean KV transfer, tcp" in result.output
    result = run_in(tmp_path, [*COMPARE[:-5], "--variant", "colocated:--replicas=3",
                               "--variant", "1P2D:--prefill-replicas=1,--decode-replicas=2", "--no-html",
                               "--out", tmp_path / "cmp"])
    assert result.exit_code == 0, result.output
    assert "Decode pool utilisation" in result.output and "1P2D" in result.output


def test_the_run_names_its_pools() -> None:
    run = prepare(model="deepseek-r1-distill-qwen-1.5b", gpu="h100", dataset="gsm8k", num_requests=3,
                  max_tokens=16, prefill_replicas=1, decode_replicas=2, decode_tp=2).run()
    assert run.title() == "deepseek-r1-distill-qwen-1.5b on 1 prefill x h100-sxm tp1 + 2 decode x h100-sxm tp2"
    assert run.summary["config"]["disaggregation"]["decode"]["tp"] == 2
    assert run.summary["requests"]["completed"] == 3


def test_fast_forward_equals_step_by_step_on_a_real_deployment() -> None:
    """The kernel-table cost models of two pools of different TP, a contended decode pool and
    the TCP link: the hand-over must land on the same step boundaries in both modes."""
    options = dict(model="deepseek-r1-distill-qwen-7b", gpu="h100", dataset="math-500", num_requests=40,
                   rate=4, max_tokens=2048, prefill_replicas=1, decode_replicas=2, prefill_tp=2,
                   decode_max_num_seqs=8, num_gpu_blocks_override=600, max_model_len=4096,
                   kv_transfer="tcp")
    fast = prepare(**options).run().requests
    slow = prepare(**options, step_by_step=True).run().requests
    for column in ("first_scheduled_s", "kv_transfer_start_s", "kv_ready_s", "decode_start_s", "first_token_s",
                   "finish_s"):
        assert (fast[column].to_numpy() == slow[column].to_numpy()).all(), column
    assert (fast["preemptions"] == slow["preemptions"]).all() and fast["kv_wait_s"].max() > 0
