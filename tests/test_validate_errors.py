"""Error computation checked by hand, timeline helpers, and a replay of the simulator's own output
(which must come back with zero error)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.simulation import run_simulation
from rllmsim.validate import compare
from rllmsim.validate.recorded import EngineArgs, RecordedRun, real_latencies
from rllmsim.validate.replay import validate
from rllmsim.validate.timeline import align_log, in_system, reconstruct_kv_blocks, sample_sim_timeline
from rllmsim.workload.table import make_request_table


def _two_requests() -> pd.DataFrame:
    # arrivals 0 and 1; 3 output tokens; first tokens at 0.5 and 1.5; last at 1.0 and 2.5
    return pd.DataFrame({"arrival_s": [0.0, 1.0], "prompt_tokens": [32, 16], "output_tokens": [3, 3],
                         "first_token_s": [0.5, 1.5], "finish_s": [1.0, 2.5], "scheduled_s": [0.0, 1.0]})


def test_latencies_and_errors_by_hand() -> None:
    lat = real_latencies(_two_requests())
    np.testing.assert_allclose(lat["ttft"], [0.5, 0.5])
    np.testing.assert_allclose(lat["e2el"], [1.0, 1.5])
    np.testing.assert_allclose(lat["tpot"], [0.25, 0.5])  # (1.0-0.5)/2, (2.5-1.5)/2
    real = {k: compare.stats(v) for k, v in lat.items()}
    assert real["e2el"] == {"mean": 1.25, "p50": 1.25, "p90": pytest.approx(1.45), "p99": pytest.approx(1.495)}
    sim = {"ttft": {"mean": 0.6, "p50": 0.4, "p90": 0.5, "p99": 0.5}, "tpot": real["tpot"],
           "e2el": {"mean": 1.0, "p50": 1.25, "p90": 1.45, "p99": 1.495}, "itl": None}
    rows = compare.error_frame(compare.latency_rows({**real, "itl": None}, sim)).set_index(["metric", "stat"])
    assert rows.loc[("ttft", "mean"), "signed_error"] == pytest.approx(20.0)  # 0.6 vs 0.5
    assert rows.loc[("ttft", "p50"), "signed_error"] == pytest.approx(-20.0)  # 0.4 vs 0.5
    assert rows.loc[("ttft", "p50"), "abs_error"] == pytest.approx(20.0)
    assert rows.loc[("e2el", "mean"), "signed_error"] == pytest.approx(-20.0)  # 1.0 vs 1.25
    assert rows.loc[("ttft", "mean"), "real"] == pytest.approx(500.0) and rows.loc[("ttft", "mean"), "unit"] == "ms"
    assert rows.loc[("itl", "all"), "basis"] == "not recorded"
    tp = compare.throughputs(np.array([1.0, 2.5]), np.array([0.0, 1.0]), np.array([3, 3]))
    assert tp == {"duration": 2.5, "request_throughput": 0.8, "output_throughput": pytest.approx(2.4)}
    kv = compare.error_frame(compare.timeline_rows(pd.DataFrame({"kv_pct": [10.0, 30.0]}),
                                                   pd.DataFrame({"kv_pct": [15.0, 25.0]}), "recorded"))
    assert kv["signed_error"].tolist() == [-5.0, 0.0] and (kv["error_unit"] == "pp").all()  # peaks 30/25, means 20/20
    per = compare.error_frame(compare.per_request_rows({"ttft": np.array([0.5, 1.0]), "e2el": np.array([1.0, 2.0])},
                                                       {"ttft": np.array([0.6, 0.9]), "e2el": np.array([1.0, 2.0])}))
    ttft = per[per["metric"] == "ttft_per_request"].set_index("stat")
    assert ttft.loc["median", "abs_error"] == pytest.approx(15.0)  # |+20%|, |-10%|
    assert ttft.loc["median", "signed_error"] == pytest.approx(5.0)
    assert compare.pct_error(1.0, 0.0) != compare.pct_error(1.0, 0.0)  # NaN when real is 0


def test_timeline_helpers_by_hand() -> None:
    req = _two_requests()
    # request 0: fills 32 prompt tokens over [0, 0.5), then 33 -> 34 tokens until 1.0
    blocks = reconstruct_kv_blocks(req, np.array([0.25, 0.75, 1.25, 2.0, 3.0]), block_size=16)
    # t=0.25: 16 tokens = 1 block; t=0.75: 32+1+1 = 34 -> 3 blocks; t=1.25: request 1 at 8 tokens -> 1;
    # t=2.0: request 1 has 16+1+1 = 18 tokens -> 2 blocks; t=3.0: nothing
    np.testing.assert_allclose(blocks, [1, 3, 1, 2, 0])
    np.testing.assert_array_equal(in_system(req, np.array([-0.1, 0.0, 1.0, 2.4, 2.5])), [0, 1, 1, 1, 0])
    ticks = np.arange(0.05, 2.6, 0.1)  # counts change at 0, 1.0 and 2.5: offsets 0.25..0.35 all match
    offset, miss = align_log(ticks - 0.3, in_system(req, ticks), req)
    assert offset == pytest.approx(0.3, abs=0.011) and miss == 0.0
    timeline = pd.DataFrame({"replica": [0, 0], "start_s": [0.0, 1.0], "end_s": [1.0, 3.0], "running": [1, 2],
                             "waiting": [3, 0], "kv_blocks_start": [10, 20], "kv_blocks_peak": [10, 40]})
    s = sample_sim_timeline(timeline, np.array([0.5, 2.0, 3.5]), capacity_blocks=100, replicas=1)
    assert s["running"].tolist() == [1, 2, 0] and s["waiting"].tolist() == [3, 0, 0]
    np.testing.assert_allclose(s["kv_blocks"], [10, 30, 0])  # halfway from 20 to 40 at t=2
    np.testing.assert_allclose(s["kv_pct"], [10, 30, 0])


def _self_run(seed: int = 3) -> tuple[RecordedRun, object]:
    """A 'real' run that is the simulator's own output under a linear cost model."""
    dep = small_deployment(blocks=64, max_num_seqs=4, budget=128)
    rng = np.random.default_rng(seed)
    n = 20
    table = make_request_table(np.cumsum(rng.exponential(0.05, n)), rng.integers(10, 120, n),
                               rng.integers(5, 60, n), "self")
    out = run_simulation(dep, table, cost_model=LinearCostModel(), seed=0).requests
    requests = pd.DataFrame({"request_id": out["request_id"].astype(str), "arrival_s": out["arrival_s"],
                             "prompt_tokens": out["prompt_tokens"], "output_tokens": out["output_tokens"],
                             "first_token_s": out["first_token_s"], "finish_s": out["finish_s"],
                             "scheduled_s": out["first_scheduled_s"]})
    run = RecordedRun("self", "synthetic", Path("."), requests, EngineArgs(max_num_seqs=4, max_num_batched_tokens=128))
    return run, dep


def test_replaying_the_simulators_own_output_gives_zero_error() -> None:
    run, dep = _self_run()
    v = validate(run, dep, LinearCostModel())
    errs = v.errors[v.errors["basis"] != "not recorded"]
    lat = errs[errs["metric"].isin(["ttft", "tpot", "e2el", "request_throughput", "output_throughput", "duration"])]
    assert len(lat) == 15 and lat["abs_error"].max() < 1e-9
    kv = errs[errs["metric"] == "kv_usage"]
    assert v.kv_basis == "reconstructed" and kv["abs_error"].max() < 1e-9
    np.testing.assert_allclose(v.requests["sim_e2el_s"], v.requests["real_e2el_s"])


def test_a_slower_model_shows_as_positive_error() -> None:
    run, dep = _self_run()
    v = validate(run, dep, LinearCostModel(base=0.02))  # every step 10 ms slower
    e = v.errors.set_index(["metric", "stat"])
    assert e.loc[("tpot", "mean"), "signed_error"] > 20 and e.loc[("e2el", "p50"), "signed_error"] > 10
    assert e.loc[("request_throughput", "total"), "signed_error"] < 0


def test_closed_loop_benchmark_client_starts_every_user_at_once() -> None:
    """A silicon row is simulated as `vllm bench serve --max-concurrency` / `aiperf --concurrency`
    run it: users x requests_per_user requests, the first `users` sent together at t=0, every
    later one sent the instant an earlier one completes (a users-slot semaphore), and the means
    taken over every request, the opening wave included."""
    from rllmsim.validate.aiconfigurator import ClosedLoopCase, benchmark_run, simulate_case

    case = ClosedLoopCase(row=2, model="x", system="h100-sxm", mode="agg", precision="bf16", isl=100, osl=20,
                          users=3, tp=1, ttft_ms=1.0, tpot_ms=1.0, backend_version="")
    dep = small_deployment(blocks=256, max_num_seqs=8, budget=128)
    req = benchmark_run(case, dep, LinearCostModel(), requests_per_user=4).requests.sort_values("request_id")
    assert len(req) == 12 and req["finish_s"].notna().all()
    assert (req["arrival_s"].iloc[:3] == 0.0).all() and (req["arrival_s"].iloc[3:] > 0.0).all()
    finishes = req["finish_s"].to_numpy()
    for arrival in req["arrival_s"].iloc[3:]:  # each later request follows a completion at once
        assert np.isclose(finishes, arrival, rtol=0, atol=1e-12).any()
    events = sorted([(t, 1) for t in req["arrival_s"]] + [(t, -1) for t in finishes], key=lambda e: (e[0], e[1]))
    assert max(np.cumsum([d for _, d in events])) == 3  # never more than `users` in flight
    out = simulate_case(case, dep, LinearCostModel(), requests_per_user=4)
    ttft = 1e3 * req["ttft_s"].to_numpy()
    assert out["sim_requests"] == 12 and out["sim_ttft_ms"] == pytest.approx(ttft.mean())
    assert out["sim_ttft_first_wave_ms"] == pytest.approx(ttft[:3].mean())
    assert out["sim_ttft_rest_ms"] == pytest.approx(ttft[3:].mean())
    tpot = 1e3 * ((req["e2el_s"] - req["ttft_s"]) / 19).to_numpy()
    assert out["sim_tpot_ms"] == pytest.approx(tpot.mean())
    assert out["sim_e2el_ms"] == pytest.approx(ttft.mean() + 19 * tpot.mean())  # fixed osl: the means fix E2EL


def test_closed_loop_real_e2el_follows_from_the_recorded_means() -> None:
    """mean E2EL = mean TTFT + (osl - 1) x mean TPOT; a row that cannot be simulated keeps it too."""
    from rllmsim.validate.aiconfigurator import ClosedLoopCase, validate_cases

    case = ClosedLoopCase(row=2, model="no/such-model", system="h100-sxm", mode="agg", precision="bf16", isl=100,
                          osl=128, users=3, tp=1, ttft_ms=150.0, tpot_ms=20.0, backend_version="")
    out = validate_cases([case]).iloc[0]
    assert out["real_e2el_ms"] == 150.0 + 127 * 20.0 and out["skipped"] != ""
    assert np.isnan(out["e2el_error_pct"])


def test_closed_loop_mape_by_hand() -> None:
    from rllmsim.validate.aiconfigurator import mape_by_model

    results = pd.DataFrame({"row": [2, 3, 4, 5], "model": ["a", "a", "b", "b"],
                            "ttft_error_pct": [10.0, -30.0, 50.0, 0.0], "tpot_error_pct": [1.0, -3.0, 5.0, 9.0],
                            "e2el_error_pct": [2.0, -4.0, 6.0, 8.0],
                            "skipped": ["", "", "", "unknown model"], "excluded": ["", "", "", ""]})
    mape = mape_by_model(results).set_index("model")
    assert mape.loc["a", "ttft_mape_pct"] == pytest.approx(20.0) and mape.loc["a", "ttft_mean_signed_pct"] == -10.0
    assert mape.loc["b", "cases"] == 1 and mape.loc["b", "skipped"] == 1 and mape.loc["b", "tpot_mape_pct"] == 5.0
    assert mape.loc["all", "cases"] == 3 and mape.loc["all", "ttft_mape_pct"] == pytest.approx(30.0)
    assert mape.loc["a", "e2el_mape_pct"] == pytest.approx(3.0) and mape.loc["all", "e2el_mean_signed_pct"] == pytest.approx(4 / 3)
    assert "start" not in mape.columns
