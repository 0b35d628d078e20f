"""Capacity planning: SLO parsing, the rate bisection, early stopping, Pareto fronts, and `plan`."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.specs import load_gpu, load_model
from rllmsim.sweep.executors import InlineExecutor
from rllmsim.sweep.plan import Candidate, PlanSettings, bisect_rate, candidates_from, run_plan
from rllmsim.sweep.plan_result import pareto_front
from rllmsim.sweep.search import sizing_points
from rllmsim.sweep.probe import ProbeSpec, _allowed_over, run_probe
from rllmsim.sweep.slo import SLO, parse_duration, parse_slo, parse_slos

MODEL = "deepseek-r1-distill-qwen-1.5b"
SLOS = ("ttft_p99=5s", "tpot_p99=60ms", "e2el_p90=120s")
WORKLOAD = {"arrival": "gamma", "cv": 2.0, "dataset": "math-500", "max_tokens": 4096}


def small_settings(**overrides) -> PlanSettings:
    values = dict(model=MODEL, target_rate=6.0, slos=tuple(parse_slos(SLOS)), workload=WORKLOAD,
                  engine={"max_model_len": 8192}, duration_s=120.0, min_requests=50, max_requests=400,
                  rel_tol=0.1)
    values.update(overrides)
    return PlanSettings(**values)


# -- SLOs --------------------------------------------------------------------------------------------

def test_slos_parse_with_units():
    assert parse_slo("ttft_p99=10s") == SLO("ttft", "p99", 10.0)
    assert parse_slo("TPOT_P99=80ms").limit_s == pytest.approx(0.08)
    assert parse_slo("e2el_p90:10min").limit_s == 600.0
    assert parse_duration("250us", "x") == pytest.approx(250e-6)
    assert [s.name for s in parse_slos(["ttft_p99=10s tpot_p99=80ms", "e2el_p90=600s"])] == \
        ["ttft_p99", "tpot_p99", "e2el_p90"]


@pytest.mark.parametrize("text, needle", [
    ("tpot_p99=80", "not a duration with a unit"),
    ("latency_p99=1s", "METRIC one of"),
    ("ttft_p42=1s", "STAT one of"),
    ("ttft_p99", "METRIC_STAT=LIMIT"),
    ("ttft_p99=0s", "must be > 0"),
])
def test_bad_slos_are_one_line_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_slo(text)


def test_an_slo_given_twice_is_refused():
    with pytest.raises(ConfigError, match="given twice"):
        parse_slos(["ttft_p99=1s", "ttft_p99=2s"])


# -- bisection -----------------------------------------------------------------------------------------

def threshold(limit: float):
    return lambda rate: {"rate": rate, "ok": rate <= limit}


@pytest.mark.parametrize("limit", [0.3, 0.9, 1.0, 3.3, 7.9, 12.0])
def test_bisection_brackets_the_threshold_within_tolerance(limit):
    best, fail, probes = bisect_rate(threshold(limit), start=1.0, max_rate=1e6, rel_tol=0.05, max_probes=30,
                                     min_rate=0.01)
    assert best["rate"] <= limit < fail
    assert fail / best["rate"] - 1 <= 0.05
    assert len(probes) <= 12


def test_bisection_reports_what_cannot_be_sustained_and_caps_at_the_target():
    best, fail, probes = bisect_rate(threshold(0.0), 1.0, 100.0, 0.05, 30, min_rate=0.1)
    assert best is None and fail == pytest.approx(0.125) and len(probes) == 4
    best, fail, probes = bisect_rate(threshold(100.0), 1.0, 20.0, 0.05, 30, min_rate=0.1)
    assert best["rate"] == 20.0 and fail is None and [p["rate"] for p in probes] == [1, 2, 4, 8, 16, 20]
    best, fail, probes = bisect_rate(threshold(3.3), 1.0, 1e6, 0.001, max_probes=5, min_rate=0.1)
    assert len(probes) == 5 and best["rate"] <= 3.3 < fail


def test_pareto_front_keeps_the_undominated_cheapest_first():
    rows = [{"c": 1, "l": 9}, {"c": 2, "l": 5}, {"c": 2, "l": 7}, {"c": 3, "l": 6}, {"c": 4, "l": 1},
            {"c": 1, "l": 10}, {"c": 5, "l": float("nan")}]
    assert [(r["c"], r["l"]) for r in pareto_front(rows, "c", "l")] == [(1, 9), (2, 5), (4, 1)]


# -- early stopping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 7, 10, 99, 100, 101, 1000])
@pytest.mark.parametrize("stat", ["p50", "p90", "p99"])
def test_early_stop_threshold_is_exact_for_numpy_percentiles(n, stat):
    """More than `allowed` values over the limit guarantee the percentile is over; `allowed` do not."""
    slo = SLO("ttft", stat, 1.0)
    allowed = _allowed_over(slo, n)
    q = float(stat[1:])
    if allowed + 1 <= n:
        worst = np.array([1.0] * (n - allowed - 1) + [1.0 + 1e-9] * (allowed + 1))  # barely over, rest at limit
        assert np.percentile(worst, q) > 1.0
    best = np.array([0.0] * (n - allowed) + [1.0 + 1e-9] * allowed)  # as many over, the rest well under
    assert np.percentile(best, q) <= 1.0


def test_early_stop_never_changes_a_verdict():
    slos = tuple(parse_slos(SLOS))
    verdicts = []
    for gpu in ("l4", "a100-80gb"):
        deployment = Deployment(model=load_model(MODEL), gpu=load_gpu(gpu), max_model_len=8192)
        for rate in (1.0, 2.0, 4.0, 16.0):
            probes = [run_probe(ProbeSpec(workload=WORKLOAD, slos=slos, duration_s=120, min_requests=50,
                                          max_requests=400, early_stop=stop), deployment, rate)
                      for stop in (True, False)]
            stopped, full = probes
            assert stopped["ok"] == full["ok"], (gpu, rate, stopped["early_stop"], full["violated"])
            if stopped["early_stop"]:
                assert stopped["violated"] in full["violated"].split(",")
            else:
                assert stopped["ttft_p99"] == full["ttft_p99"] and stopped["e2el_p90"] == full["e2el_p90"]
            verdicts.append(full["ok"])
    assert any(verdicts) and not all(verdicts)  # the grid crosses the boundary, and some probes stopped early


# -- the plan --------------------------------------------------------------------------------------------

def test_plan_finds_the_cheapest_deployment_and_the_front():
    settings = small_settings(search="all")
    candidates = candidates_from(["l4", "a100-80gb"], [1, 2], [None], ["auto"], [None])
    assert [c.label for c in candidates] == ["l4 tp1", "l4 tp2", "a100-80gb tp1", "a100-80gb tp2"]
    result = run_plan(settings, candidates, InlineExecutor())
    assert len(result.rows) == 4 and all(r["status"] == "ok" for r in result.rows)
    for row in result.rows:
        search = [p for p in row["probes"] if p["stage"] == "search"]
        passing = [p["rate"] for p in search if p["ok"]]
        assert row["max_rate"] == max(passing)
        assert row["replicas"] == math.ceil(settings.target_rate / row["max_rate"] - 1e-9) or \
            any(p["stage"] == "at-target" and not p["ok"] for p in row["probes"])
        assert row["cost_per_hour_usd"] == pytest.approx(
            row["replicas"] * row["tp"] * load_gpu(row["gpu"]).price_per_gpu_hour_usd)
        tokens_per_hour = settings.target_rate * row["mean_output_tokens"] * 3600
        assert row["usd_per_million_output_tokens"] == pytest.approx(row["cost_per_hour_usd"] / tokens_per_hour * 1e6)
        assert row["meets_target"] and row["at_target_ttft_p99"] <= 5.0
    cheapest = result.cheapest
    assert cheapest["cost_per_hour_usd"] == min(r["cost_per_hour_usd"] for r in result.rows)
    front = result.pareto
    assert front[0]["label"] == cheapest["label"] or front[0]["cost_per_hour_usd"] == cheapest["cost_per_hour_usd"]
    lat = [r["at_target_e2el_p99"] for r in front]
    assert lat == sorted(lat, reverse=True)


def test_fixed_replica_candidates_and_infeasible_ones():
    settings = small_settings(target_rate=3.0, search="all")
    candidates = [Candidate("a100-80gb", 1, None, "auto", 1), Candidate("a100-80gb", 1, None, "auto", 2),
                  Candidate("rtx-4090", 1, None, "auto", None)]
    rows = {r["label"]: r for r in run_plan(small_settings(model="deepseek-r1-distill-llama-70b",
                                                           target_rate=3.0), candidates[2:]).rows}
    assert rows["rtx-4090 tp1"]["status"] == "infeasible" and "does not fit" in rows["rtx-4090 tp1"]["reason"]
    result = run_plan(settings, candidates[:2])
    two = next(r for r in result.rows if r["replicas"] == 2)
    assert two["replicas_mode"] == "fixed" and two["gpus"] == 2
    assert two["max_rate"] <= settings.target_rate  # searches stop at the target


def test_plan_settings_refuse_what_cannot_be_planned():
    with pytest.raises(ConfigError, match="at least one SLO"):
        small_settings(slos=())
    with pytest.raises(ConfigError, match="open-loop arrivals"):
        small_settings(workload={**WORKLOAD, "arrival": "closed-loop"})
    with pytest.raises(ConfigError, match="--warmup"):
        small_settings(warmup=1.0)


def test_plan_command_prints_the_ranking_and_writes_the_plan(tmp_path):
    args = ["plan", "--model", MODEL, "--gpus", "l4,a100-80gb", "--tp", "1", "--rate", "4", "--max-tokens", "4096",
            "--max-model-len", "8192", "--duration", "120", "--min-requests", "50", "--max-requests", "300",
            "--workers", "1", "--out", str(tmp_path / "plan")]
    for slo in SLOS:
        args += ["--slo", slo]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Deployments that serve 4 req/s" in out and "Cheapest for 4 req/s:" in out
    assert "Pareto front ($/hour vs e2el_p99)" in out and "per million output tokens" in out
    assert "a100-80gb $1.79" in out  # prices are printed with their source
    assert "How far to trust it: fidelity: kernels cost model; nearest validated case:" in out
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["kind"] == "plan" and plan["cheapest"]["label"] in out
    candidates = pd.read_parquet(tmp_path / "plan" / "candidates.parquet")
    probes = pd.read_parquet(tmp_path / "plan" / "probes.parquet")
    assert set(candidates["label"]) == {"l4 tp1", "a100-80gb tp1"} and set(probes["label"]) == set(candidates["label"])
    # the default search stops l4 after one probe: at 4 req/s / 2, what two L4s (cheaper than one A100) need
    assert "Cannot be cheaper, so not searched further" in out
    assert "l4 tp1                       one replica misses" in out and "(target / 2)" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("#"))
    assert "KV peak" in header and "preempt" in header and "stragglers" in header
    meets = candidates[candidates["meets_target"].fillna(False).astype(bool)]
    assert len(meets) and (meets["at_target_stragglers"] >= 0).all()  # counted where the target was probed


@pytest.mark.parametrize("extra, needle", [
    ([], "Missing option '--slo'"),
    (["--slo", "ttft_p99=10"], "not a duration with a unit"),
    (["--slo", "ttft_p99=10s", "--arrival", "closed-loop"], "open-loop arrivals"),
    (["--slo", "ttft_p99=10s", "--tp", "one"], "--tp takes integers"),
    (["--slo", "ttft_p99=10s", "--gpus", "h1000"], "h1000"),
])
def test_plan_command_errors(extra, needle):
    result = CliRunner().invoke(main, ["plan", "--model", MODEL, *extra])
    assert result.exit_code == 2
    assert needle in result.output


# -- several seeds --------------------------------------------------------------------------------

def test_several_seeds_size_each_candidate_by_its_worst_seed():
    from rllmsim.sweep.plan import search_candidate

    settings = small_settings(target_rate=40.0, more_seeds=(1, 2))
    assert settings.seeds == (0, 1, 2) and PlanSettings.from_dict(settings.to_dict()) == settings
    row = search_candidate({"settings": settings.to_dict(), "candidate": dataclasses.asdict(Candidate("h100-sxm", 1))})
    probes = pd.DataFrame(row["probes"])
    search = probes[probes["stage"] == "search"]
    assert set(search["seed"]) == {0, 1, 2}
    best = {seed: float(g.loc[g["ok"], "rate"].max()) for seed, g in search.groupby("seed")}
    assert row["max_rate"] == min(best.values())  # the worst seed sizes the candidate
    assert row["max_rate_by_seed"] == ", ".join(f"{s}: {best[s]:.4g}" for s in (0, 1, 2))
    assert row["max_rate_seed_spread_pct"] == pytest.approx(100 * (max(best.values()) / min(best.values()) - 1))
    # auto replicas: enough of the worst seed's rate, and the headroom says by how much they exceed the target
    assert row["replicas"] == math.ceil(40.0 / row["max_rate"] - 1e-9)
    assert row["headroom_pct"] == pytest.approx(100 * (row["replicas"] * row["max_rate"] / 40.0 - 1))
    assert row["headroom_pct"] >= 0


def test_plan_command_reports_the_seed_spread_and_headroom(tmp_path):
    args = ["plan", "--model", MODEL, "--gpus", "h100-sxm", "--tp", "1", "--rate", "20", "--max-tokens", "4096",
            "--max-model-len", "8192", "--duration", "60", "--min-requests", "50", "--max-requests", "200",
            "--workers", "1", "--seeds", "0,1", "--tolerance", "0.2"]
    for slo in SLOS:
        args += ["--slo", slo]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "headroom" in result.output and "Sustainable rate per seed" in result.output
    assert "seeds 0,1" in result.output
    clash = CliRunner().invoke(main, [*args, "--seed", "3"])
    assert clash.exit_code == 2 and "give --seed or --seeds, not both" in clash.output


# -- the first bracket and sizing points ---------------------------------------------------------

def test_sizing_points_are_the_target_over_n_strictly_inside():
    assert sizing_points(20.0, 4.0, 10.0) == pytest.approx([20 / 3, 5.0])
    assert sizing_points(20.0, 5.0, 6.0) == [] and sizing_points(20.0, 0.999992, 1.03) == [1.0]


@pytest.mark.parametrize("limit", list(np.geomspace(0.3, 19.0, 25)))
@pytest.mark.parametrize("guess", [None, 0.8, 1.0, 1.1])
def test_search_settles_the_replica_count_exactly(limit, guess):
    """Whatever the start, the replica count is the smallest n whose share target / n passes,
    and the bracket is still within the tolerance."""
    start = 1.0 if guess is None else guess * limit
    best, fail, probes = bisect_rate(threshold(limit), start, 20.0, 0.05, 12, 0.01, guessed=guess is not None,
                                     sizing_target=20.0)
    n = math.ceil(20.0 / best["rate"] - 1e-9)
    assert 20.0 / n <= limit < 20.0 / (n - 1) if n > 1 else 20.0 <= limit
    assert best["rate"] <= limit < fail and fail / best["rate"] - 1 <= 0.05
    if guess == 1.0:
        assert len(probes) <= 5  # a good guess needs no doubling


def test_first_bracket_contains_the_doubling_searchs_answer_and_picks_the_same_deployment():
    from rllmsim.sweep.plan import search_candidate

    candidates = candidates_from(["l4", "a100-80gb"], [1], [None], ["auto"], [None])
    plans = {flag: run_plan(small_settings(first_bracket=flag, search="all"), candidates, InlineExecutor())
             for flag in (True, False)}
    for guessed, doubled in zip(plans[True].rows, plans[False].rows):
        assert guessed["label"] == doubled["label"] and guessed["replicas"] == doubled["replicas"]
        assert 2 / 3 <= guessed["rate_estimate"] / doubled["max_rate"] <= 1.5  # the guess lands near the answer
        assert math.isnan(doubled["rate_estimate"])
        rates = [(p["seed"], p["rate"]) for p in guessed["probes"]]
        assert len(rates) == len(set(rates))  # no simulation is run twice
    assert sum(len(r["probes"]) for r in plans[True].rows) < sum(len(r["probes"]) for r in plans[False].rows)
    assert plans[True].cheapest["label"] == plans[False].cheapest["label"]
    assert plans[True].cheapest["replicas"] == plans[False].cheapest["replicas"]
    row = search_candidate({"settings": small_settings(search="all").to_dict(),
                            "candidate": dataclasses.asdict(candidates[1])})
    assert row == {**plans[True].rows[1], "wall_s": row["wall_s"], "probes": row["probes"]}  # same seed, same result
    with pytest.raises(ConfigError, match="first_bracket must be True or False"):
        small_settings(first_bracket="no")


def test_the_first_bracket_can_be_turned_off_from_the_api_and_the_cli():
    from rllmsim.api.plan import prepare

    grid = dict(slo="ttft_p99=10s", model=MODEL, gpus="l4", tp=1)
    assert prepare(**grid).settings.first_bracket is True
    assert prepare(**grid, first_bracket=False).settings.first_bracket is False
    with pytest.raises(ConfigError, match=r"--\[no-\]first-bracket"):
        prepare(**grid, first_bracket="off")
    help_text = CliRunner().invoke(main, ["plan", "--help"]).output
    assert "--first-bracket / --no-first-bracket" in help_text


def test_plan_takes_a_cache_aware_router_with_weights():
    from rllmsim.api.plan import prepare

    setup = prepare(slo=list(SLOS), model=MODEL, gpus="h100-sxm", tp="1", rate=2.0, router="kv-aware:prefix=2,kv=1",
                    workers=1)
    assert setup.settings.router == "kv-aware:prefix=2,kv=1"
    with pytest.raises(ConfigError, match="unknown router"):
        prepare(slo=list(SLOS), model=MODEL, gpus="h100-sxm", tp="1", rate=2.0, router="nearest")
