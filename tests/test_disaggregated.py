"""Prefill/decode disaggregation: hand-checked timings and fast-forward equal to step-by-step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.disaggregation import Disaggregation
from rllmsim.engine.kv_transfer import KVTransfer
from rllmsim.simulation import run_simulation
from rllmsim.workload.table import make_request_table

#: deepseek-r1-distill-qwen-1.5b: 28 layers x 2 KV heads x head_dim 128 x (K and V) x 2 bytes (bf16)
KV_BYTES_PER_TOKEN = 28 * 2 * 128 * 2 * 2
LINK = KVTransfer("test", gbps=8.0, latency_s=1e-3)  # 1 GB/s: a byte takes a nanosecond


def _pd(prefill: int = 1, decode: int = 1, link: KVTransfer = LINK, **knobs) -> Disaggregation:
    shared = small_deployment(**knobs)
    return Disaggregation(dataclasses.replace(shared, replicas=prefill), dataclasses.replace(shared, replicas=decode),
                          link)


def _run(pd: Disaggregation, table, fast_forward: bool = True, router: str = "round-robin"):
    return run_simulation(pd.decode, table, cost_model=LinearCostModel(), disaggregation=pd,
                          fast_forward=fast_forward, router=router)


def test_one_request_e2el_is_prefill_plus_transfer_plus_decode():
    run = _run(_pd(), make_request_table(np.array([0.0]), [100], [4], "test"))
    row = run.requests.iloc[0]
    prefill = 0.01 + 1e-4 * 100 + 1e-6 * 100          # the prompt, on the prefill instance
    transfer = 1e-3 + 100 * KV_BYTES_PER_TOKEN * 1e-9  # latency + 100 tokens of KV at 1 GB/s
    first = 0.01 + 1e-4 * 1 + 1e-6 * 100               # the last prompt token recomputed on decode
    decodes = [0.01 + 1e-4 + 1e-6 * ctx for ctx in (100, 101, 102)]
    assert row.prefill_done_s == pytest.approx(prefill, rel=1e-12)
    assert row.kv_transfer_s == pytest.approx(transfer, rel=1e-12)
    assert row.kv_wait_s == 0 and row.decode_wait_s == 0  # an idle decode instance takes it at once
    assert row.ttft_s == pytest.approx(prefill + transfer + first, rel=1e-12)
    assert row.e2el_s == pytest.approx(prefill + transfer + first + sum(decodes), rel=1e-12)
    assert row.output_tokens == 4 and row.prefill_replica == 0 and row.replica == 0
    assert row.kv_transfer_bytes == 100 * KV_BYTES_PER_TOKEN


def test_decode_admission_waits_for_kv_room():
    # 8 blocks of 16 on decode: request 0 (prompt 64, 60 outputs) holds all 8 from its 113th token
    # (about 0.51 s in) until it finishes (about 0.64 s), so request 1 (prompt 16, arriving at
    # 0.55 s) cannot get its one block on the decode instance before then.
    pd = _pd(blocks=8, max_model_len=128)
    run = _run(pd, make_request_table(np.array([0.0, 0.55]), [64, 16], [60, 2], "test"))
    req = run.requests.set_index("request_id")
    assert req.loc[1, "kv_transfer_start_s"] == pytest.approx(req.loc[0, "finish_s"], rel=1e-12)
    assert req.loc[1, "kv_wait_s"] > 0.05
    assert (req["preemptions"] == 0).all()


def test_prefill_keeps_the_kv_until_the_transfer_lands():
    # 8 blocks of 16 on each instance: request 0's 100-token prompt takes 7, so request 1 (also
    # 100 tokens, arriving with it) is admitted on the prefill instance only once request 0's KV
    # has landed on the decode instance and the prefill instance freed its copy.
    run = _run(_pd(blocks=8, max_model_len=128), make_request_table(np.array([0.0, 0.0]), [100, 100], [2, 2], "test"))
    req = run.requests.set_index("request_id")
    assert req.loc[0, "kv_ready_s"] > req.loc[0, "prefill_done_s"]
    assert req.loc[1, "first_scheduled_s"] == pytest.approx(req.loc[0, "kv_ready_s"], rel=1e-12)
    assert run.summary["disaggregated"]["prefill"]["kv"]["peak_blocks"] == 7


def test_slower_link_only_delays_by_the_transfer_difference():
    table = make_request_table(np.array([0.0]), [200], [3], "test")
    fast = _run(_pd(link=LINK), table).requests.iloc[0]
    slow = _run(_pd(link=dataclasses.replace(LINK, gbps=0.8)), table).requests.iloc[0]
    extra = 200 * KV_BYTES_PER_TOKEN * (1e-8 - 1e-9)
    assert slow.e2el_s - fast.e2el_s == pytest.approx(extra, rel=1e-9)
    assert slow.ttft_s - fast.ttft_s == pytest.approx(extra, rel=1e-9)


def test_summary_reports_each_pool():
    pd = _pd(prefill=1, decode=2)
    table = make_request_table(np.linspace(0, 1, 6), [50] * 6, [20] * 6, "test")
    run = _run(pd, table)
    section = run.summary["disaggregated"]
    assert section["prefill"]["replicas"] == 1 and section["decode"]["replicas"] == 2
    assert 0 < section["prefill"]["utilization"] < section["decode"]["utilization"] < 1
    assert section["kv_transfer"]["seconds"]["mean"] == pytest.approx(1e-3 + 50 * KV_BYTES_PER_TOKEN * 1e-9)
    assert run.summary["kv"] == section["decode"]["kv"]
    assert set(run.requests["replica"]) == {0, 1}  # round-robin over the decode pool


@st.composite
def scenarios(draw):
    """Two pools of one model, each with its own pool size, engine limits and token budget."""
    block_size, chunked = draw(st.sampled_from([8, 16])), draw(st.booleans())
    max_model_len = draw(st.integers(8, 256))
    spec = {}
    if draw(st.booleans()):  # speculative decoding on the decode instances
        spec = {"speculative_method": "ngram", "num_speculative_tokens": draw(st.integers(1, 4)),
                "spec_acceptance_rate": draw(st.floats(0.0, 1.0))}
    pools = []
    for _ in range(2):
        fewest = -(-max_model_len // block_size)
        pools.append(small_deployment(
            blocks=draw(st.integers(fewest, 3 * fewest)), block_size=block_size, max_num_seqs=draw(st.integers(1, 8)),
            budget=draw(st.integers(8, 300) if chunked else st.integers(max_model_len, 400)), chunked=chunked,
            max_model_len=max_model_len, replicas=draw(st.integers(1, 3)),
            scheduler_reserve_full_isl=draw(st.booleans()), enable_prefix_caching=draw(st.booleans()), **spec))
    link = KVTransfer("test", gbps=draw(st.sampled_from([0.01, 1.0, 400.0])), latency_s=draw(st.floats(0, 0.05)))
    n = draw(st.integers(1, 25))
    lengths = st.lists(st.integers(1, 300), min_size=n, max_size=n)
    arrivals = np.cumsum(draw(st.lists(st.floats(0, 0.3), min_size=n, max_size=n)))
    prompts, groups, shared = np.array(draw(lengths)), None, np.zeros(n, dtype=np.int64)
    if draw(st.booleans()):  # shared prefixes, cached on the prefill instances
        groups = np.array(draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)))
        shared = np.where(groups >= 0, draw(st.integers(1, 64)), 0)
    table = make_request_table(arrivals, prompts + shared, draw(lengths), "prop", prefix_group=groups,
                               prefix_tokens=shared if groups is not None else None)
    router = draw(st.sampled_from(["round-robin", "least-outstanding", "least-kv"]))
    return Disaggregation(pools[0], pools[1], link), table, router


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_fast_forward_equals_step_by_step(scenario):
    pd, table, router = scenario
    fast = _run(pd, table, fast_forward=True, router=router).requests
    slow = _run(pd, table, fast_forward=False, router=router).requests
    for column in ("first_scheduled_s", "prefill_done_s", "kv_transfer_start_s", "kv_ready_s", "decode_start_s",
                   "first_token_s", "finish_s"):
        np.testing.assert_allclose(fast[column], slow[column], rtol=1e-9, atol=0, err_msg=column)
    for column in ("preemptions", "replica", "prefill_replica", "output_tokens", "rejected"):
        assert (fast[column] == slow[column]).all(), column
    done = ~slow["rejected"]
    assert (slow.loc[done, "output_tokens"] == slow.loc[done, "target_output_tokens"]).all()
