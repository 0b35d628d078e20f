"""Bad command-line values, every subcommand (issue #13): each ends in exit 2 and one stderr line
naming the flag, before any simulation, and leaves nothing behind. Files: test_bad_input_files.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_input_helpers import COMPARE, PLAN, SIMULATE, assert_refused, run_in

# (flags added to a tiny `simulate`, words one of which the error line must hold)
SIMULATE_CASES = [
    (["--seed", "-1"], "seed"),
    (["--seed", "99999999999999999999999"], "seed"),
    (["--num-requests", "0"], "num_requests"),
    (["--num-requests", "-5"], "num_requests"),
    (["--num-requests", "10000000000"], "num_requests"),
    (["--rate", "0"], "rate"),
    (["--rate", "-1"], "rate"),
    (["--rate", "nan"], "rate"),
    (["--rate", "abc"], "rate"),
    (["--cv", "0"], "cv"),
    (["--cv", "-1"], "cv"),
    (["--cv", "nan"], "cv"),
    (["--cv", "inf"], "cv"),
    (["--burstiness", "0"], "burstiness"),
    (["--burstiness", "-2"], "burstiness"),
    (["--burstiness", "nan"], "burstiness"),
    (["--cv", "1", "--burstiness", "1"], "burstiness"),
    (["--arrival", "closed-loop", "--think-time", "inf"], "think"),
    (["--arrival", "closed-loop", "--think-time", "-5"], "think"),
    (["--arrival", "closed-loop", "--think-time", "nan"], "think"),
    (["--arrival", "closed-loop", "--concurrency", "0"], "concurrency"),
    (["--arrival", "batch-waves", "--concurrency", "-3"], "concurrency"),
    (["--arrival", "bogus"], "arrival"),
    (["--straggler-factor", "-1"], "straggler"),
    (["--straggler-factor", "0"], "straggler"),
    (["--straggler-factor", "nan"], "straggler"),
    (["--straggler-factor", "inf"], "straggler"),
    (["--goodput", "ttft:nan"], "goodput"),
    (["--goodput", "ttft:-5"], "goodput"),
    (["--goodput", "ttft:inf"], "goodput"),
    (["--goodput", "ttft:0"], "goodput"),
    (["--goodput", "bogus:5"], "goodput"),
    (["--goodput", "tpot:abc"], "goodput"),
    (["--tp", "0"], "tp"),
    (["--tp", "-2"], "tp"),
    (["--tp", "3"], "tp"),
    (["--tp", "8"], "tp"),  # 28 attention heads: vLLM requires heads divisible by TP
    (["--tp", "abc"], "tp"),
    (["--replicas", "0"], "replicas"),
    (["--replicas", "-1"], "replicas"),
    (["--gpu-memory-utilization", "0"], "gpu_memory_utilization"),
    (["--gpu-memory-utilization", "2"], "gpu_memory_utilization"),
    (["--gpu-memory-utilization", "-0.5"], "gpu_memory_utilization"),
    (["--gpu-memory-utilization", "nan"], "gpu_memory_utilization"),
    (["--block-size", "7"], "block_size"),
    (["--block-size", "0"], "block_size"),
    (["--max-num-seqs", "0"], "max_num_seqs"),
    (["--max-num-seqs", "-1"], "max_num_seqs"),
    (["--max-num-batched-tokens", "0"], "max_num_batched_tokens"),
    (["--max-model-len", "0"], "max_model_len"),
    (["--max-model-len", "999999"], "max_model_len"),
    (["--num-gpu-blocks-override", "0"], "num_gpu_blocks"),
    (["--num-gpu-blocks-override", "-1"], "num_gpu_blocks"),
    (["--quantization", "bogus"], "quantization"),
    (["--kv-cache-dtype", "bogus"], "kv_cache_dtype"),
    (["--draft-model", "deepseek-r1-distill-qwen-1.5b"], "draft"),
    (["--num-speculative-tokens", "4"], "speculative"),
    (["--speculative-method", "ngram", "--num-speculative-tokens", "99"], "num_speculative_tokens"),
    (["--speculative-method", "ngram", "--acceptance-rate", "2"], "acceptance_rate"),
    (["--speculative-method", "ngram", "--acceptance-rate", "nan"], "acceptance_rate"),
    (["--speculative-method", "draft"], "draft_model"),
    (["--speculative-method", "bogus"], "speculative-method"),
    (["--vllm-version", "abc"], "vllm_version"),
    (["--model", "bogus-model-name"], "bogus-model-name"),
    (["--model", "/nonexistent/config.json"], "config.json"),
    (["--gpu", "bogus-gpu"], "bogus-gpu"),
    (["--router", "bogus"], "router"),
    (["--dataset", "bogus-dataset"], "bogus-dataset"),
    (["--dataset", "math-500:abc"], "math-500"),
    (["--dataset", "math-500:-1"], "math-500"),
    (["--max-tokens", "0"], "max_tokens"),
    (["--max-tokens", "-7"], "max_tokens"),
    (["--shared-prefix-tokens", "-1"], "shared_prefix_tokens"),
    (["--prefix-groups", "0"], "prefix_groups"),
    (["--turns", "0"], "turns"),
    (["--turns", "2", "--arrival", "closed-loop"], "turns"),
    (["--lengths-file", "nope.csv"], "nope.csv"),
    (["--trace", "nope.csv"], "nope.csv"),
    (["--trace", "nope.csv", "--trace-format", "bogus"], ("nope.csv", "trace")),
    (["--cost-model", "nope.json"], "nope.json"),
    (["--cost-model", "bogus"], "cost-model"),
    (["--kernel-tables", "nope-dir", "--cost-model", "kernels"], "nope-dir"),
    (["--no-such-flag"], "no-such-flag"),
    (["--out", "/proc/x"], "--out"),
    (["--out", "/proc/self/nope/run"], "--out"),
    (["--out", "/dev/null"], "--out"),
]

COMPARE_CASES = [
    (["--seed", "-1"], "seed"),
    (["--straggler-factor", "-1"], "straggler"),
    (["--goodput", "e2el:nan"], "goodput"),
    (["--num-requests", "10000000000"], "num_requests"),
    (["--rate", "-1"], "rate"),
    (["--tp", "3"], "tp"),
    (["--out", "/proc/x"], "--out"),
    (["--variant", "bad:--no-such-flag"], "no-such-flag"),
    (["--variant", "b2:--tp=3"], "tp"),
    (["--variant", "nocolon"], "variant"),
    (["--variant", "q:--quantization=bogus"], "quantization"),
    (["--arrival", "closed-loop", "--think-time", "-1"], "think"),
]

PLAN_CASES = [
    (["--tp", "0"], "tp"),
    (["--tp", "3"], "tp"),
    (["--tp", "abc"], "tp"),
    (["--tp", "-4"], "tp"),
    (["--quantization", "bogus"], "quantization"),
    (["--kv-cache-dtype", "bogus"], "kv"),
    (["--replicas", "0"], "replicas"),
    (["--replicas", "-1"], "replicas"),
    (["--replicas", "abc"], "replicas"),
    (["--model", "bogus-model-name"], "bogus-model-name"),
    (["--gpus", "bogus-gpu"], "bogus-gpu"),
    (["--slo", "bogus"], "slo"),
    (["--slo", "ttft_p99=nan"], "slo"),
    (["--slo", "ttft_p99=-1s"], "slo"),
    (["--duration", "0"], "duration"),
    (["--duration", "nan"], "duration"),
    (["--min-requests", "0"], "min"),
    (["--warmup", "1.5"], "warmup"),
    (["--warmup", "-0.1"], "warmup"),
    (["--tolerance", "0"], "tolerance"),
    (["--tolerance", "nan"], "tolerance"),
    (["--max-probes", "0"], "max-probes"),
    (["--start-rate", "0"], "start-rate"),
    (["--start-rate", "-1"], "start-rate"),
    (["--seed", "-1"], "seed"),
    (["--workers", "0"], "workers"),
    (["--workers", "-2"], "workers"),
    (["--rate", "0"], "rate"),
    (["--rate", "nan"], "rate"),
    (["--gpu-memory-utilization", "2"], "gpu_memory_utilization"),
    (["--block-size", "7"], "block_size"),
    (["--max-model-len", "0"], "max_model_len"),
    (["--max-num-seqs", "0"], "max_num_seqs"),
    (["--pareto-metric", "bogus"], "pareto"),
    (["--num-requests", "10000000000"], "num_requests"),
    (["--out", "/proc/x"], "--out"),
    (["--arrival", "closed-loop", "--think-time", "nan"], "think"),
]

VALIDATE_CASES = [
    (["nope-run"], "nope-run"),
    (["--seed", "-1", "nope-run"], ("seed", "nope-run")),
    (["--requests-per-user", "0", "nope-run"], ("requests-per-user", "nope-run")),
]

OTHER_CASES = [
    (["bogus-subcommand"], "bogus-subcommand"),
    (["report", "nope-dir"], "nope-dir"),
    (["calibrate", "nope-profile"], "nope-profile"),
    (["calibrate", "nope-profile", "--test-fraction", "2"], ("test-fraction", "nope-profile")),
    (["kernels", "import", "aiconfigurator", "nope-dir", "--out", "tables"], "nope-dir"),
    (["kernels", "import", "bogus", "nope-dir", "--out", "tables"], "aiconfigurator"),
    (["sweep", "nope.yaml", "--out", "sw"], "nope.yaml"),
]


def _ids(cases) -> list[str]:
    return [" ".join(flags) for flags, _ in cases]


@pytest.mark.parametrize(("flags", "names"), SIMULATE_CASES, ids=_ids(SIMULATE_CASES))
def test_simulate_refuses(tmp_path: Path, flags: list[str], names) -> None:
    out = [] if "--out" in flags else ["--out", tmp_path / "run"]
    assert_refused(tmp_path, [*SIMULATE, *out, *flags], names)


@pytest.mark.parametrize(("flags", "names"), COMPARE_CASES, ids=_ids(COMPARE_CASES))
def test_compare_refuses(tmp_path: Path, flags: list[str], names) -> None:
    out = [] if "--out" in flags else ["--out", tmp_path / "cmp"]
    assert_refused(tmp_path, [*COMPARE, *out, *flags], names)


@pytest.mark.parametrize(("flags", "names"), PLAN_CASES, ids=_ids(PLAN_CASES))
def test_plan_refuses(tmp_path: Path, flags: list[str], names) -> None:
    assert_refused(tmp_path, [*PLAN, *flags], names)


@pytest.mark.parametrize(("flags", "names"), VALIDATE_CASES, ids=_ids(VALIDATE_CASES))
def test_validate_refuses(tmp_path: Path, flags: list[str], names) -> None:
    assert_refused(tmp_path, ["validate", *flags], names)


@pytest.mark.parametrize(("args", "names"), OTHER_CASES, ids=_ids(OTHER_CASES))
def test_other_commands_refuse(tmp_path: Path, args: list[str], names) -> None:
    assert_refused(tmp_path, args, names)


def test_an_unwritable_out_is_refused_before_the_run(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if (locked / "probe").parent.stat().st_mode & 0o200 == 0 and not _can_write(locked):
            assert_refused(tmp_path, [*SIMULATE, "--out", locked / "run"], "--out")
    finally:
        locked.chmod(0o700)


def _can_write(path: Path) -> bool:
    try:
        (path / ".probe").touch()
    except OSError:
        return False
    (path / ".probe").unlink()
    return True


@pytest.mark.parametrize("flags", [
    ["--seed", "0"], ["--seed", "4294967295"], ["--rate", "inf"], ["--cv", "0.5"], ["--burstiness", "4"],
    ["--arrival", "closed-loop", "--think-time", "0", "--concurrency", "1"], ["--straggler-factor", "1"],
    ["--goodput", "ttft:500 tpot:50"], ["--tp", "4"], ["--max-model-len", "4096"], ["--block-size", "32"],
    ["--gpu-memory-utilization", "1"], ["--max-num-seqs", "1"],
], ids=" ".join)
def test_valid_edge_values_still_run(tmp_path: Path, flags: list[str]) -> None:
    result = run_in(tmp_path, [*SIMULATE, "--no-timeline", "--out", tmp_path / "run", *flags])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "summary.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
