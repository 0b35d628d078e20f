"""`plan --search cheapest`: branch and bound gives the cheapest deployment `--search all` gives,
stops a dearer candidate on a probe that proves it, and does not depend on workers or on its guess."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import rllmsim.sweep.plan as plan_module
from rllmsim.cli import main
from rllmsim.specs import load_gpu
from rllmsim.sweep.dominance import competitive_replicas, estimated_cost, first_wave
from rllmsim.sweep.executors import InlineExecutor, LocalExecutor
from rllmsim.sweep.plan import PlanSettings, candidates_from, run_plan
from rllmsim.sweep.slo import parse_slos

MODEL = "deepseek-r1-distill-qwen-1.5b"
SLOS = ("ttft_p99=5s", "tpot_p99=60ms", "e2el_p90=120s")
WORKLOAD = {"arrival": "gamma", "cv": 2.0, "dataset": "math-500", "max_tokens": 4096}
GRID = candidates_from(["l4", "a100-80gb", "h100-sxm"], [1, 2], [None], ["auto"], [None])


def settings(**overrides) -> PlanSettings:
    values = dict(model=MODEL, target_rate=6.0, slos=tuple(parse_slos(SLOS)), workload=WORKLOAD,
                  engine={"max_model_len": 8192}, duration_s=120.0, min_requests=50, max_requests=400, rel_tol=0.1)
    return PlanSettings(**{**values, **overrides})


def without_wall_times(rows: list[dict]) -> str:
    """The rows as JSON text (NaN equals NaN there) without the seconds each search took."""
    return json.dumps([{**{k: v for k, v in r.items() if k != "wall_s"},
                        "probes": [{k: v for k, v in p.items() if k != "wall_s"} for p in r.get("probes", [])]}
                       for r in rows], sort_keys=True)


@pytest.fixture(scope="module")
def plans():
    return {mode: run_plan(settings(search=mode), GRID, InlineExecutor()) for mode in ("all", "cheapest")}


def test_the_bound_costs_work_out_by_hand():
    assert competitive_replicas(79.84, 4.99) == 16  # 16 x $4.99 = $79.84: a tie is still searched
    assert competitive_replicas(79.84, 19.96) == 4 and competitive_replicas(5.0, 8.0) == 0
    assert estimated_cost(20.0, None, 4.0, 19.96) == pytest.approx(5 * 19.96)
    assert estimated_cost(20.0, None, 3.9, 19.96) == pytest.approx(6 * 19.96)
    assert estimated_cost(20.0, 3, None, 10.0) == 30.0 and math.isinf(estimated_cost(20.0, None, None, 1.0))
    assert first_wave([3.0, 2.0, math.inf, 2.0]) == [1, 3] and first_wave([math.inf]) == []


def test_cheapest_search_finds_what_the_full_search_finds_with_fewer_probes(plans):
    full, bounded = plans["all"], plans["cheapest"]
    for key in ("label", "replicas", "cost_per_hour_usd", "max_rate", "at_target_e2el_p99"):
        assert bounded.cheapest[key] == full.cheapest[key]
    probes = {mode: sum(len(r["probes"]) for r in plan.rows) for mode, plan in plans.items()}
    assert probes["cheapest"] < probes["all"]
    assert bounded.dominated and not full.dominated
    rows = {r["label"]: r for r in full.rows}
    incumbent = bounded.cheapest["cost_per_hour_usd"]
    for row in bounded.dominated:
        usd = row["tp"] * load_gpu(row["gpu"]).price_per_gpu_hour_usd
        most = math.floor(incumbent / usd)  # the most replicas that could still cost no more
        if most == 0:  # one replica already costs more: no probe needed
            assert row["probes"] == [] and row["min_cost_per_hour_usd"] == pytest.approx(usd) and usd > incumbent
            continue
        [probe] = row["probes"]
        assert probe["stage"] == "bound" and not probe["ok"]
        assert probe["rate"] == pytest.approx(6.0 / most)
        assert row["min_cost_per_hour_usd"] == pytest.approx((most + 1) * usd)
        assert row["min_cost_per_hour_usd"] > incumbent
        searched = rows[row["label"]]  # the full search agrees: more replicas than `most`, dearer
        assert searched["max_rate"] < probe["rate"]
        assert not searched.get("meets_target") or searched["cost_per_hour_usd"] > incumbent
    for row in bounded.ranked:  # what was searched is what the full search found
        assert {k: row[k] for k in ("replicas", "max_rate", "cost_per_hour_usd")} == \
            {k: rows[row["label"]][k] for k in ("replicas", "max_rate", "cost_per_hour_usd")}


def test_cheapest_search_is_the_same_on_two_workers(plans):
    executor = LocalExecutor(2)
    try:
        pooled = run_plan(settings(search="cheapest"), GRID, executor)
    finally:
        executor.close()
    assert without_wall_times(pooled.rows) == without_wall_times(plans["cheapest"].rows)


def test_a_wrong_prediction_reruns_the_second_wave_to_the_same_rows(plans, monkeypatch):
    # every estimated cost halved: the second wave starts with a bound the first wave does not
    # meet, so it must run again with the real one and end where a right prediction ends
    monkeypatch.setattr(plan_module, "estimated_cost", lambda *args: 0.5 * estimated_cost(*args))
    rerun = run_plan(settings(search="cheapest"), GRID, InlineExecutor())
    assert without_wall_times(rerun.rows) == without_wall_times(plans["cheapest"].rows)


def test_search_mode_is_checked_and_reaches_the_cli():
    from rllmsim.errors import ConfigError

    with pytest.raises(ConfigError, match="--search must be one of cheapest, all"):
        settings(search="fastest")
    result = CliRunner().invoke(main, ["plan", "--model", MODEL, "--slo", "ttft_p99=5s", "--search", "fastest"])
    assert result.exit_code == 2 and "'fastest' is not one of 'cheapest', 'all'" in result.output
