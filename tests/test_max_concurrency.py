"""`--max-concurrency N` on open-loop arrivals, as `vllm bench serve` applies it: requests are
created at their arrival times, wait FIFO for one of N slots, and their clocks start when sent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.cli import main
from rllmsim.engine.clients import OpenLoop
from rllmsim.errors import ConfigError
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.sweep.probe import WatchedOpenLoop
from rllmsim.workload.table import make_request_table

TIME_COLUMNS = ("arrival_s", "client_queue_s", "first_scheduled_s", "first_token_s", "finish_s")


def _table(seed: int, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return make_request_table(np.cumsum(rng.exponential(0.05, n)), rng.integers(4, 60, n),
                              rng.integers(1, 80, n), "seeded")


def _run(table: pd.DataFrame, cap: int | None, fast_forward: bool = True) -> pd.DataFrame:
    deployment = small_deployment(blocks=64, max_num_seqs=8, budget=128)
    return run_simulation(deployment, table, cost_model=LinearCostModel(), fast_forward=fast_forward,
                          client=OpenLoop(cap)).requests


def _max_in_flight(requests: pd.DataFrame) -> int:
    """At every send time, the requests sent and not yet finished (a finish at that instant has
    released its slot first)."""
    sent, finish = requests["arrival_s"].to_numpy(), requests["finish_s"].to_numpy()
    return max(int(((sent <= t) & (finish > t)).sum()) for t in sent)


@pytest.mark.parametrize("cap", [1, 2, 3, 5])
def test_in_flight_never_exceeds_the_cap_and_waits_are_fifo(cap):
    table = _table(seed=cap)
    capped = _run(table, cap)
    assert capped["finish_s"].notna().all()
    assert _max_in_flight(capped) <= cap
    assert _max_in_flight(_run(table, None)) > cap  # the workload does press against the cap
    scheduled = capped["arrival_s"] - capped["client_queue_s"]
    np.testing.assert_allclose(scheduled, table["arrival_s"], rtol=0, atol=1e-12)
    assert (capped["client_queue_s"] >= 0).all() and capped["client_queue_s"].max() > 0
    assert np.all(np.diff(capped["arrival_s"].to_numpy()) >= 0)  # sent in arrival order
    # a request that waited was sent exactly when an earlier one finished (its slot freed)
    waited = capped[capped["client_queue_s"] > 0]
    assert np.isin(waited["arrival_s"], capped["finish_s"]).all()


def test_the_clock_starts_at_the_send_and_results_differ_from_unbounded():
    table = _table(seed=7)
    free, capped = _run(table, None), _run(table, 2)
    assert (free["client_queue_s"] == 0).all()
    np.testing.assert_allclose(capped["ttft_s"], capped["first_token_s"] - capped["arrival_s"])
    assert capped["ttft_s"].mean() != pytest.approx(free["ttft_s"].mean())
    assert capped["finish_s"].max() > free["finish_s"].max()


def test_a_cap_at_least_the_request_count_equals_unbounded_exactly():
    table = _table(seed=3, n=25)
    free = _run(table, None)
    for cap in (25, 100):
        pd.testing.assert_frame_equal(_run(table, cap), free)


@pytest.mark.parametrize("cap", [1, 3])
@pytest.mark.parametrize("seed", range(6))
def test_fast_forward_equals_step_by_step_with_the_cap(cap, seed):
    table = _table(seed=seed, n=30)
    fast, slow = _run(table, cap, fast_forward=True), _run(table, cap, fast_forward=False)
    for column in TIME_COLUMNS:
        np.testing.assert_allclose(fast[column], slow[column], rtol=1e-9, atol=0, err_msg=column)
    assert (fast["output_tokens"] == slow["output_tokens"]).all()


def test_closed_loop_takes_its_users_from_max_concurrency():
    spec = WorkloadSpec(arrival="closed-loop", concurrency=4, max_concurrency=4)
    assert spec.max_concurrency == 4
    with pytest.raises(ConfigError, match="max-concurrency 3 contradicts --concurrency 4"):
        WorkloadSpec(arrival="closed-loop", concurrency=4, max_concurrency=3)
    with pytest.raises(ConfigError, match="batch-waves"):
        WorkloadSpec(arrival="batch-waves", max_concurrency=3)
    with pytest.raises(ConfigError, match="max_concurrency must be >= 1"):
        WorkloadSpec(arrival="gamma", max_concurrency=0)


SIM = ["simulate", "--gpu", "h100", "--model", "deepseek-r1-distill-qwen-1.5b", "--dataset", "gsm8k",
       "--num-requests", "30", "--rate", "40", "--max-tokens", "256", "--no-timeline"]


def _cli(tmp_path, *args: str):
    return CliRunner().invoke(main, [*SIM, *args, "--out", str(tmp_path / "run")])


def test_cli_caps_open_loop_and_sets_closed_loop_users(tmp_path):
    result = _cli(tmp_path, "--max-concurrency", "2")
    assert result.exit_code == 0, result.output
    requests = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    assert _max_in_flight(requests) <= 2 and requests["client_queue_s"].max() > 0
    closed = CliRunner().invoke(main, [*SIM, "--arrival", "closed-loop", "--max-concurrency", "3",
                                       "--out", str(tmp_path / "closed")])
    assert closed.exit_code == 0, closed.output
    summary = pd.read_json(tmp_path / "closed" / "summary.json", typ="series")
    assert summary["config"]["workload"]["concurrency"] == 3
    assert summary["config"]["client"] == "closed-loop"


@pytest.mark.parametrize("args, words", [
    (["--concurrency", "4"], "--max-concurrency"),
    (["--arrival", "closed-loop", "--concurrency", "4", "--max-concurrency", "5"], "contradicts"),
    (["--arrival", "batch-waves", "--max-concurrency", "5"], "--concurrency"),
    (["--max-concurrency", "0"], "max_concurrency"),
])
def test_contradictions_are_one_line_errors(tmp_path, args, words):
    result = _cli(tmp_path, *args)
    assert result.exit_code == 2
    assert words in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_plans_watched_probe_client_keeps_the_cap():
    table = _table(seed=11)
    deployment = small_deployment(blocks=64, max_num_seqs=8, budget=128)
    watched = run_simulation(deployment, table, cost_model=LinearCostModel(),
                             client=WatchedOpenLoop([], 0.0, max_concurrency=2)).requests
    pd.testing.assert_frame_equal(watched, _run(table, 2))
    assert _max_in_flight(watched) <= 2
