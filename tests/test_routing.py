"""Cache-aware routing: prefix affinity, the load scorers, their weights, and bad specs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_helpers import LinearCostModel, small_deployment
from test_engine_properties import TIME_COLUMNS, scenarios
from rllmsim.cli import main
from rllmsim.engine.prefix_index import PrefixIndex
from rllmsim.engine.router import parse_router
from rllmsim.errors import ConfigError
from rllmsim.simulation import run_simulation
from rllmsim.workload.table import make_request_table

CACHE_AWARE = ["kv-aware", "kv-aware:prefix=1,kv=0,queue=0", "kv-aware:prefix=0,kv=1,queue=1", "dynamo-kv",
               "dynamo-kv:overlap=4"]


def shared_prefix_table(n: int = 240, groups: int = 8, prefix: int = 512, rate: float = 40.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, n)
    prompts = prefix + rng.integers(16, 128, n)
    return make_request_table(np.cumsum(rng.exponential(1 / rate, n)), prompts, rng.integers(8, 64, n), "prefix",
                              prefix_group=group, prefix_tokens=np.full(n, prefix))


def run(table, router: str, replicas: int = 4, fast_forward: bool = True, blocks: int = 512):
    deployment = small_deployment(blocks=blocks, max_num_seqs=16, budget=512, max_model_len=2048,
                                  replicas=replicas, enable_prefix_caching=True)
    return run_simulation(deployment, table, cost_model=LinearCostModel(), router=router, fast_forward=fast_forward)


def test_prefix_affinity_sends_a_group_to_the_replica_that_cached_it():
    """Two prefix groups, interleaved: round-robin splits each group over both replicas, prefix
    affinity keeps each on one (the second group's first request goes to the idle replica)."""
    groups = np.array([0, 1, 0, 1, 0, 1, 1, 0])
    table = make_request_table(np.arange(8) * 0.002, np.full(8, 300), np.full(8, 40), "hand",
                               prefix_group=groups, prefix_tokens=np.full(8, 256))
    affinity = run(table, "kv-aware:prefix=1,kv=0,queue=0", replicas=2).requests
    assert set(affinity.loc[groups == 0, "replica"]) == {0}
    assert set(affinity.loc[groups == 1, "replica"]) == {1}
    assert (affinity["cached_tokens"].to_numpy() > 0).sum() == 6  # all but each group's first
    spread = run(table, "round-robin", replicas=2).requests
    assert len(set(spread.loc[groups == 0, "replica"])) == 2


@pytest.mark.parametrize("router", ["kv-aware", "dynamo-kv:overlap=4"])
def test_prefix_affinity_raises_hit_rate_and_cuts_ttft_over_round_robin(router):
    table = shared_prefix_table()
    baseline = run(table, "round-robin").summary
    aware = run(table, router).summary
    assert aware["prefix_cache"]["hit_rate"] > baseline["prefix_cache"]["hit_rate"] + 0.05
    assert aware["ttft_s"]["mean"] < baseline["ttft_s"]["mean"]
    assert aware["requests"]["completed"] == baseline["requests"]["completed"] == len(table)


@pytest.mark.parametrize("weighted, plain", [("kv-aware:prefix=0,kv=0,queue=1", "least-outstanding"),
                                             ("kv-aware:prefix=0,kv=1,queue=0", "least-kv"),
                                             ("dynamo-kv:overlap=0", "least-kv")])
def test_zero_prefix_weight_reduces_to_the_load_scorers(weighted, plain):
    table = shared_prefix_table(n=120, rate=80.0)
    a, b = run(table, weighted).requests, run(table, plain).requests
    assert (a["replica"] == b["replica"]).all()
    assert a["replica"].nunique() == 4


def test_prefix_index_stays_within_each_replicas_capacity():
    """The least recently routed prefix is forgotten first; a lookup sees what is left."""
    index = PrefixIndex([10, 10])
    index.routed(0, 1, 6)
    index.routed(0, 2, 3)
    index.routed(1, 1, 4)
    assert index.matched_blocks(1, 8).tolist() == [6, 4]
    index.routed(0, 3, 5)  # 6 + 3 + 5 > 10: group 1 leaves replica 0
    assert index.matched_blocks(1, 8).tolist() == [0, 4]
    assert index.matched_blocks(2, 2).tolist() == [2, 0]  # capped at the request's own prefix


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from(CACHE_AWARE))
def test_fast_forward_equals_step_by_step_with_cache_aware_routers(scenario, router):
    deployment, table, _ = scenario
    deployment = dataclasses.replace(deployment, enable_prefix_caching=True)
    fast = run_simulation(deployment, table, cost_model=LinearCostModel(), router=router, fast_forward=True).requests
    slow = run_simulation(deployment, table, cost_model=LinearCostModel(), router=router, fast_forward=False).requests
    for column in TIME_COLUMNS:
        np.testing.assert_allclose(fast[column], slow[column], rtol=1e-9, atol=0)
    for column in ("preemptions", "replica", "output_tokens", "rejected", "cached_tokens"):
        assert (fast[column] == slow[column]).all(), column
    assert (fast["finish_s"].notna() ^ fast["rejected"]).all()  # every arrived request completes or is rejected


def test_same_seed_same_routing():
    table = shared_prefix_table(n=80)
    assert (run(table, "kv-aware").requests["replica"] == run(table, "kv-aware").requests["replica"]).all()


@pytest.mark.parametrize("spec, words", [
    ("bogus", ("unknown router 'bogus'", "kv-aware")),
    ("kv-aware:cache=1", ("unknown weight 'cache'", "prefix, kv, queue")),
    ("kv-aware:prefix=lots", ("prefix='lots' is not a number",)),
    ("kv-aware:queue=-1", ("queue=-1", ">= 0")),
    ("dynamo-kv:overlap=inf", ("overlap=inf", "finite")),
    ("least-kv:prefix=1", ("takes no weights", "--router least-kv")),
])
def test_bad_router_specs_are_one_line_config_errors(spec, words):
    with pytest.raises(ConfigError) as err:
        parse_router(spec)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_bad_router_on_the_cli_is_one_line():
    result = CliRunner().invoke(main, ["simulate", "--router", "kv-aware:prefix=x", "--num-requests", "2"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "router 'kv-aware'" in result.output


def test_default_weights_are_filled_in():
    assert parse_router("kv-aware:kv=0") == ("kv-aware", {"prefix": 3.0, "kv": 0.0, "queue": 2.0})
    assert parse_router("dynamo-kv") == ("dynamo-kv", {"overlap": 1.0})
