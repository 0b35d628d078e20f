"""bench.json: a simulated run in `vllm bench serve --save-result` format, checked against a real
result file (tests/data/vllm_bench_save_result_real.json, see tests/data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.metrics import bench_json
from rllmsim.metrics.bench_json import NOT_SIMULATED
from rllmsim.workload.traces import read_trace

REAL = Path(__file__).parent / "data" / "vllm_bench_save_result_real.json"
SIM = ["simulate", "--gpu", "h100", "--model", "deepseek-r1-distill-qwen-1.5b", "--dataset", "gsm8k",
       "--num-requests", "40", "--rate", "8", "--max-tokens", "256", "--no-timeline"]


def _simulate(out: Path, *args: str) -> tuple[dict, dict, pd.DataFrame]:
    result = CliRunner().invoke(main, [*SIM, *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return (json.loads((out / "bench.json").read_text()), json.loads((out / "summary.json").read_text()),
            pd.read_parquet(out / "requests.parquet"))


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    return _simulate(tmp_path_factory.mktemp("capped") / "run", "--max-concurrency", "3",
                     "--goodput", "ttft:50", "tpot:3")


@pytest.fixture(scope="module")
def real() -> dict:
    return json.loads(REAL.read_text())


def _aggregates(result: dict) -> set[str]:
    return {k for k, v in result.items() if not isinstance(v, list)}


def test_keys_cover_the_real_files_and_only_the_documented_ones_are_missing(capped, real):
    bench, _, _ = capped
    assert set(NOT_SIMULATED) <= set(real), "an excluded key that vLLM does not write"
    assert not set(NOT_SIMULATED) & set(bench)
    assert set(real) - set(NOT_SIMULATED) <= set(bench)
    optional = {"label", "max_concurrency", "request_goodput"}  # null when vLLM's flag is not given
    for key in _aggregates(real):  # same JSON kinds: number, string, null
        kinds = {type(real[key]), type(bench[key])} - ({type(None)} if key in optional else set())
        assert len(kinds) == 1 or kinds <= {int, float}, key
    per_request = [k for k, v in real.items() if isinstance(v, list) and k not in NOT_SIMULATED]
    assert all(len(bench[k]) == bench["num_prompts"] for k in per_request)


def test_units_are_ms_of_the_summarys_seconds(capped):
    bench, summary, _ = capped
    for metric in ("ttft", "tpot", "itl", "e2el"):
        stats = summary[f"{metric}_s"]
        assert bench[f"mean_{metric}_ms"] == pytest.approx(1e3 * stats["mean"], rel=1e-9)
        assert bench[f"median_{metric}_ms"] == pytest.approx(1e3 * stats["p50"], rel=1e-9)
        assert bench[f"p99_{metric}_ms"] == pytest.approx(1e3 * stats["p99"], rel=1e-9)
        assert bench[f"std_{metric}_ms"] > 0
    assert bench["duration"] == summary["duration_s"]
    assert bench["request_throughput"] == summary["throughput"]["requests_per_s"]
    assert bench["request_goodput"] == summary["goodput"]["requests_per_s"] > 0
    assert bench["completed"] == summary["requests"]["completed"] == 40
    assert bench["total_output_tokens"] == summary["tokens"]["output"] == sum(bench["output_lens"])


def test_traffic_and_client_queue_follow_vllm(capped):
    bench, _, requests = capped
    assert (bench["request_rate"], bench["burstiness"], bench["max_concurrency"]) == (8.0, 0.25, 3)
    queue = requests["client_queue_s"].to_numpy()
    assert bench["mean_client_queue_time_ms"] == pytest.approx(1e3 * queue.mean()) and queue.max() > 0
    assert bench["p99_e2el_including_client_queue_ms"] == pytest.approx(
        1e3 * np.percentile(requests["e2el_s"] + queue, 99))
    assert bench["label"] == "rllmsim" and bench["simulated_by"].startswith("rllmsim")


def test_closed_loop_reads_as_rate_inf_with_the_users_as_cap(tmp_path):
    bench, _, _ = _simulate(tmp_path / "run", "--arrival", "closed-loop", "--concurrency", "5")
    assert (bench["request_rate"], bench["max_concurrency"], bench["request_goodput"]) == ("inf", 5, None)
    assert "mean_client_queue_time_ms" in bench and "mean_e2el_including_client_queue_ms" not in bench


def test_replaying_bench_json_gives_back_the_scheduled_arrivals(capped, tmp_path):
    bench, _, requests = capped
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    replay = read_trace(path, "vllm-bench", 1.0)
    scheduled = requests["arrival_s"] - requests["client_queue_s"]
    np.testing.assert_allclose(replay["arrival_s"], scheduled - scheduled.min(), atol=1e-9)
    assert (replay["output_tokens"].to_numpy() == requests["output_tokens"].to_numpy()).all()


def _random_done(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 30
    sent = np.sort(rng.uniform(0, 20, n))
    first = sent + rng.uniform(0, 1, n)
    finish = first + rng.uniform(0, 6, n) * (rng.random(n) > 0.1)
    return pd.DataFrame({"arrival_s": sent, "first_token_s": first, "finish_s": finish,
                         "output_tokens": rng.integers(1, 300, n)})


@pytest.mark.parametrize("seed", range(5))
def test_peak_concurrency_and_tokens_per_second_match_vllms_bucket_loops(seed):
    done = _random_done(seed)
    t0 = done["arrival_s"].min()
    buckets = int(np.ceil(done["finish_s"].max() - t0)) + 1
    active, tokens = np.zeros(buckets), np.zeros(buckets)
    for row in done.itertuples():  # vLLM's loops, tokens evenly spaced from first to last
        active[int(row.arrival_s - t0):int(row.finish_s - t0) + 1] += 1
        for t in np.linspace(row.first_token_s, row.finish_s, row.output_tokens):
            tokens[int(t - t0)] += 1
    assert bench_json._max_concurrent_requests(done) == int(active.max())
    assert bench_json._max_tokens_per_second(done) == pytest.approx(tokens.max(), abs=3)
