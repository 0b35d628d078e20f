"""Reasoning traffic: ServeGen arrivals and lengths, per-model lengths, the reasoning/answer split
and TTFVT (issue 12)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.errors import ConfigError
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.workload import model_lengths, servegen
from rllmsim.workload.reasoning import split_output
from rllmsim.workload.table import make_request_table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

POOL_OUTPUT_MEAN = 1527  # shared/reasoning-lengths/README.md, pooled over clients by request rate


def _laws():
    from importlib import resources
    return tomllib.loads(resources.files("rllmsim.workload").joinpath("model_lengths.toml").read_text())["models"]


@pytest.mark.parametrize("model", sorted(_laws()))
def test_per_model_means_cut_at_the_source_limit_match_the_published(model):
    rng = np.random.default_rng(1)
    for dataset, law in _laws()[model].items():
        lengths, note = model_lengths.resolve(dataset, model)
        assert note is None and lengths.model == model
        _, output = lengths.sample(20000, rng)
        cut = np.minimum(output, int(law["limit"])).mean()
        assert abs(cut / law["published_mean"] - 1) < 0.10, (model, dataset, cut, law["published_mean"])


def test_a_model_without_data_uses_its_nearest_relative_and_the_summary_says_so():
    assert model_lengths.nearest_model("qwen3-235b-a22b-thinking-2507", "aime-2024") == "qwen3-32b"
    assert model_lengths.nearest_model("deepseek-r1-distill-qwen-1.5b", "aime-2024") == "deepseek-r1-distill-qwen-1.5b"
    assert model_lengths.resolve("math-500", "llama-3.1-8b-instruct") is None  # not a reasoning model
    dep = small_deployment(blocks=4096, max_model_len=40000, model=_model("deepseek-r1-distill-llama-8b"))
    run = run_simulation(dep, WorkloadSpec(arrival="poisson", rate=50, dataset="aime-2024", num_requests=20),
                         cost_model=LinearCostModel())
    assert "deepseek-r1-distill-qwen-7b" in run.summary["lengths_notes"][0]


def test_the_1_5b_distill_writes_longer_than_the_32b_on_math_500():
    rng = np.random.default_rng(2)
    small = model_lengths.resolve("math-500", "deepseek-r1-distill-qwen-1.5b")[0].sample(20000, rng)[1].mean()
    large = model_lengths.resolve("math-500", "deepseek-r1-distill-qwen-32b")[0].sample(20000, rng)[1].mean()
    assert small > 1.4 * large


def _windows(law: int) -> list[int]:
    pool = servegen.load_pool()
    return np.flatnonzero((pool.law == law) & (pool.cv > 0.7) & (pool.cv < 2.0))[:3].tolist()


@pytest.mark.parametrize("law", [servegen.GAMMA, servegen.WEIBULL])
def test_servegen_gaps_reproduce_a_windows_rate_and_cv(law):
    pool = servegen.load_pool()
    rng = np.random.default_rng(3)
    for w in _windows(law):
        gaps = pool.intervals(w, 20000, rng)
        assert abs(1 / gaps.mean() / pool.rate[w] - 1) < 0.05
        assert abs(gaps.std() / gaps.mean() / pool.cv[w] - 1) < 0.05


def test_servegen_pool_scaled_to_the_rate_with_the_pools_lengths():
    pool = servegen.load_pool()
    rng = np.random.default_rng(4)
    times, rows = pool.arrivals(20.0, 20000, rng)
    assert np.all(np.diff(times) >= 0)
    assert abs(len(times) / (times[-1] - times[0]) / 20.0 - 1) < 0.05
    _, output, ratio = pool.sample(pool.pooled_rows(200000, rng), rng)
    assert abs(output.mean() / POOL_OUTPUT_MEAN - 1) < 0.03
    assert abs(ratio.mean() - 0.70) < 0.02


def test_servegen_replay_follows_the_day_and_refuses_a_silent_window():
    pool = servegen.load_pool()
    times, rows = pool.arrivals(10.0, 3000, np.random.default_rng(5), start_s=36000)
    assert pool.start_s[rows[0]] >= 36000 and abs(3000 / times[-1] / 10.0 - 1) < 0.25
    wrapped = servegen.DAY_S + 36000  # a start past the day wraps round to the same hour
    assert pool.arrivals(10.0, 10, np.random.default_rng(0), start_s=wrapped)[0].size == 10
    silent = sorted(set(range(0, 86400, 600)) - set(pool.start_s.tolist()))
    if silent:
        with pytest.raises(ConfigError, match="servegen start"):
            pool.arrivals(10.0, 10, np.random.default_rng(0), start_s=silent[0])


def test_split_keeps_the_answer_after_a_thinking_budget_and_cuts_reasoning_first():
    output, reasoning = split_output(np.array([1000, 1000, 10]), np.array([0.8, 0.8, 0.0]), max_tokens=900, budget=None)
    assert output.tolist() == [900, 900, 10] and reasoning.tolist() == [800, 800, 0]
    output, reasoning = split_output(np.array([1000]), 0.8, max_tokens=None, budget=100)
    assert output.tolist() == [300] and reasoning.tolist() == [100]
    output, reasoning = split_output(np.array([1000]), 0.8, max_tokens=500, budget=None)
    assert output.tolist() == [500] and reasoning.tolist() == [500]  # cut mid-reasoning: no answer
    with pytest.raises(ConfigError, match="reasoning-budget"):
        split_output(np.array([10]), 0.5, budget=-1)


def _model(name):
    from rllmsim.specs import load_model
    return load_model(name)


@pytest.mark.parametrize("spec", [None, "ngram"])
def test_ttfvt_after_ttft_split_sums_and_fast_forward_is_exact(spec):
    knobs = {"speculative_method": spec, "num_speculative_tokens": 3} if spec else {}
    dep = small_deployment(blocks=600, max_num_seqs=6, budget=512, max_model_len=8192, **knobs)
    rng = np.random.default_rng(6)
    n = 60
    output = rng.integers(1, 400, n)
    reasoning = np.minimum(rng.integers(0, 400, n), output)
    table = make_request_table(np.cumsum(rng.exponential(0.05, n)), rng.integers(1, 300, n), output, "r",
                               reasoning_tokens=reasoning)
    fast = run_simulation(dep, table, cost_model=LinearCostModel()).requests
    slow = run_simulation(dep, table, cost_model=LinearCostModel(), fast_forward=False).requests
    np.testing.assert_allclose(fast["ttfvt_s"], slow["ttfvt_s"], rtol=1e-9, atol=0)
    done = fast[fast["finish_s"].notna()]
    assert len(done) == n
    assert (done["reasoning_tokens"] + done["answer_tokens"] == done["output_tokens"]).all()
    answered = done["answer_tokens"] > 0
    assert (done.loc[answered, "ttfvt_s"] >= done.loc[answered, "ttft_s"]).all()
    assert done.loc[~answered, "ttfvt_s"].isna().all()
    assert (done.loc[done["reasoning_tokens"] == 0, "ttfvt_s"] == done.loc[done["reasoning_tokens"] == 0, "ttft_s"]).all()


def test_servegen_run_end_to_end_with_a_reasoning_budget():
    dep = small_deployment(blocks=20000, max_num_seqs=64, budget=4096, max_model_len=65536, replicas=2,
                           model=_model("deepseek-r1-distill-qwen-32b"))
    spec = WorkloadSpec(arrival="servegen", dataset="servegen-deepseek-r1", rate=20, num_requests=400,
                        reasoning_budget=500)
    run = run_simulation(dep, spec, cost_model=LinearCostModel(base=0.002, per_token=1e-6, per_kv=1e-9))
    req = run.requests
    assert (req["reasoning_tokens"] <= 500).all() and (req["ttfvt_s"].dropna() >= req["ttft_s"][req["ttfvt_s"].notna()]).all()
    tokens = run.summary["tokens"]
    assert tokens["reasoning"] + tokens["answer"] == tokens["output"] and tokens["reasoning"] > 0
    assert run.summary["ttfvt_s"]["p50"] >= run.summary["ttft_s"]["p50"]


def test_report_arrival_series_reads_rate_and_cv_per_bin():
    from rllmsim.report.workload_figures import arrival_series
    times = np.cumsum(np.random.default_rng(7).exponential(0.1, 40000))
    _, rate, cv = arrival_series(times, bins=10)
    np.testing.assert_allclose(rate, 10.0, rtol=0.05)
    np.testing.assert_allclose(cv, 1.0, rtol=0.05)
    assert arrival_series(np.array([1.0]))[0].size == 0


def test_ttfvt_fast_forward_equals_step_by_step_under_preemption():
    preempted = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 10))
        output = rng.integers(1, 40, n)
        table = make_request_table(np.cumsum(rng.uniform(0, 0.3, n)), rng.integers(1, 30, n), output, "r",
                                   reasoning_tokens=np.minimum(rng.integers(0, 40, n), output))
        dep = small_deployment(blocks=int(rng.integers(10, 20)), block_size=8, max_num_seqs=int(rng.integers(1, 4)),
                               budget=int(rng.integers(8, 40)), max_model_len=74)
        fast = run_simulation(dep, table, cost_model=LinearCostModel()).requests
        slow = run_simulation(dep, table, cost_model=LinearCostModel(), fast_forward=False).requests
        np.testing.assert_allclose(fast["ttfvt_s"], slow["ttfvt_s"], rtol=1e-9, atol=0, err_msg=f"seed {seed}")
        preempted += int(fast["preemptions"].sum())
    assert preempted > 0  # the case that matters: a preempted request keeps its first answer time


@pytest.mark.parametrize("flags,field", [(["--reasoning-budget", "-5"], "--reasoning-budget"),
                                         (["--servegen-start", "100"], "--servegen-start")])
def test_bad_reasoning_flags_exit_2_naming_the_flag(flags, field, tmp_path):
    from click.testing import CliRunner
    from rllmsim.cli import main
    result = CliRunner().invoke(main, ["simulate", "--model", "deepseek-r1-distill-qwen-1.5b", "--num-requests", "5",
                                       "--out", str(tmp_path / "run"), *flags])
    assert result.exit_code == 2 and field in result.output


def test_dataset_names_the_checks_accept_include_the_new_sources():
    from rllmsim.workload.draw import check_dataset
    for name in ("servegen-deepseek-r1", "aime-2025", "amc23", "olympiadbench", "aime25", "math-500"):
        check_dataset(name)
    with pytest.raises(ConfigError, match="servegen-deepseek-r1"):
        check_dataset("nosuch")
