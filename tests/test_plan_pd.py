"""`plan --pd-ratios`: disaggregated units searched beside colocated replicas, sized and priced
by hand, judged by probes like every other candidate."""

from __future__ import annotations

import dataclasses
import math

import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.errors import ConfigError
from rllmsim.specs import load_gpu
from rllmsim.sweep.executors import InlineExecutor
from rllmsim.sweep.plan import PlanSettings, build_candidate_deployment, candidates_from, run_plan
from rllmsim.sweep.plan_pd import candidate_pools, parse_pd_ratios
from rllmsim.sweep.probe import run_probe
from rllmsim.sweep.slo import parse_slos

MODEL = "deepseek-r1-distill-qwen-1.5b"
SLOS = ("ttft_p99=5s", "tpot_p99=60ms", "e2el_p90=120s")
WORKLOAD = {"arrival": "gamma", "cv": 2.0, "dataset": "math-500", "max_tokens": 4096}


def settings(**overrides) -> PlanSettings:
    values = dict(model=MODEL, target_rate=6.0, slos=tuple(parse_slos(SLOS)), workload=WORKLOAD,
                  engine={"max_model_len": 8192}, duration_s=120.0, min_requests=50, max_requests=400, rel_tol=0.1,
                  search="all")
    return PlanSettings(**{**values, **overrides})


def test_ratios_parse_and_refuse_what_is_not_a_ratio():
    assert parse_pd_ratios("1:3,2:6") == [(1, 3), (2, 6)] == parse_pd_ratios(["1:3", (2, 6), "1:3"])
    assert parse_pd_ratios(None) == []
    for bad, needle in [("0:3", "at least one instance"), ("1-3", "PREFILL:DECODE"), ("1:3:2", "PREFILL:DECODE")]:
        with pytest.raises(ConfigError, match=needle):
            parse_pd_ratios(bad)


def test_the_grid_gains_one_unit_per_ratio_for_auto_sizing_only():
    plain = candidates_from(["l4"], [1, 2], [None], ["auto"], [None, 2])
    both = candidates_from(["l4"], [1, 2], [None], ["auto"], [None, 2], [(1, 3)])
    assert [c.label for c in plain] == ["l4 tp1", "l4 tp1 x2", "l4 tp2", "l4 tp2 x2"]
    assert [c.label for c in both] == ["l4 tp1", "l4 tp1 1P3D", "l4 tp1 x2", "l4 tp2", "l4 tp2 1P3D", "l4 tp2 x2"]
    assert both[1].instances == 4 and plain[0].instances == 1


def test_a_unit_is_sized_and_priced_as_its_instances_say():
    grid = candidates_from(["a100-80gb"], [1], [None], ["auto"], [None], [(1, 1), (1, 3)])
    result = run_plan(settings(), grid, InlineExecutor())
    rows = {r["label"]: r for r in result.rows}
    assert set(rows) == {"a100-80gb tp1", "a100-80gb tp1 1P1D", "a100-80gb tp1 1P3D"}
    price = load_gpu("a100-80gb").price_per_gpu_hour_usd
    for label, instances in [("a100-80gb tp1 1P1D", 2), ("a100-80gb tp1 1P3D", 4)]:
        row = rows[label]
        assert row["status"] == "ok" and row["meets_target"]
        passing = [p["rate"] for p in row["probes"] if p["ok"] and p["stage"] == "search"]
        assert row["max_rate"] == max(passing)  # a probe's verdict, not the guess
        assert row["replicas"] == math.ceil(6.0 / row["max_rate"] - 1e-9)
        assert row["gpus"] == row["replicas"] * instances
        assert row["cost_per_hour_usd"] == pytest.approx(row["gpus"] * price)
        # requests per probe are bounded per instance, as a colocated deployment's are per replica
        assert all(p["num_requests"] == min(max(math.ceil(p["rate"] / instances * 120.0), 50), 400) * instances
                   for p in row["probes"])
    assert result.cheapest["cost_per_hour_usd"] == min(r["cost_per_hour_usd"] for r in result.ranked)


def test_a_failing_unit_probe_stops_early_with_the_verdict_of_a_whole_one():
    s = settings()
    unit = build_candidate_deployment(s, candidates_from(["l4"], [1], [None], ["auto"], [None])[0], 1)
    pools = candidate_pools(unit, 1, 1, 1)
    watched = run_probe(s.probe_spec, unit, 8.0, pools)
    whole = run_probe(dataclasses.replace(s, early_stop=False).probe_spec, unit, 8.0, pools)
    assert not watched["ok"] and watched["early_stop"] and not whole["ok"] and not whole["early_stop"]


def test_a_model_the_pools_cannot_serve_is_infeasible_with_the_reason():
    grid = candidates_from(["h100-sxm"], [1], [None], ["auto"], [None], [(1, 3)])
    rows = run_plan(settings(model="gpt-oss-20b", engine={}), grid[1:], InlineExecutor()).rows
    assert rows[0]["status"] == "infeasible" and "sliding-window" in rows[0]["reason"]


def test_the_cli_plans_units_and_refuses_bad_ratios(tmp_path):
    args = ["plan", "--model", MODEL, "--gpus", "a100-80gb", "--tp", "1", "--rate", "4", "--max-tokens", "4096",
            "--max-model-len", "8192", "--duration", "120", "--min-requests", "50", "--max-requests", "300",
            "--workers", "1", "--pd-ratios", "1:3", *[x for slo in SLOS for x in ("--slo", slo)]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "a100-80gb tp1 1P3D" in result.output
    for extra, needle in [(["--pd-ratios", "0:3"], "--pd-ratios: both pools need at least one instance"),
                          (["--pd-ratios", "1:3", "--replicas", "2"], "--pd-ratios sizes disaggregated units")]:
        bad = CliRunner().invoke(main, ["plan", "--model", MODEL, "--slo", "ttft_p99=5s", *extra])
        assert bad.exit_code == 2 and needle in bad.output, bad.output
