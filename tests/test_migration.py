"""Live migration between replicas (`--enable-migration`, `rllmsim.engine.migration`)."""

from __future__ import annotations

import numpy as np
import pytest

from engine_helpers import LinearCostModel, small_deployment
from rllmsim.errors import ConfigError
from rllmsim.simulation import run_simulation
from rllmsim.workload.table import make_request_table


def imbalanced(**knobs):
    """Round-robin puts two long requests on replica 0 and a short one on replica 1; as the two
    grow, replica 0 passes the high mark while replica 1 is empty."""
    d = small_deployment(blocks=40, replicas=2, budget=512, max_model_len=640, **knobs)
    table = make_request_table(np.array([0.0, 0.0, 0.001]), [100, 10, 100], [250, 2, 250], "imbalanced")
    return d, table


def test_a_pressured_replica_moves_its_newest_decode_to_the_empty_one():
    """Request 2 is replica 0's newest decode when it passes the high mark: its blocks copy over
    NVLink while it keeps decoding, it leaves at replica 0's first step boundary after the copy,
    the blocks it added meanwhile copy during its downtime, and idle replica 1 admits it on
    arrival as a decode, recomputing nothing: all its tokens, no preemption anywhere."""
    from rllmsim.engine.clients import OpenLoop
    from rllmsim.engine.cluster import Cluster

    d, table = imbalanced(enable_migration=True, migration_interval_s=0.01)
    cost = LinearCostModel()
    cluster = Cluster(d, cost, table, OpenLoop())
    result = cluster.run()
    ledger, (move,) = result.ledger, cluster.migrator.stats.moves
    assert (move.rid, move.source, move.destination) == (2, 0, 1) and result.migration["migrations"] == 1
    assert list(ledger.replica) == [0, 1, 1] and list(ledger.generated) == [250, 2, 250]
    assert int(ledger.preemptions.sum()) == 0
    copy = cluster.migrator.copy_seconds(0, 1, move.copied_blocks)
    assert move.left_s >= move.started_s + copy  # the first boundary after the copy ...
    longest_step = cost.base + cost.per_token * 2 + cost.per_kv * 2 * 640  # two decodes, at most 640 tokens each
    assert move.left_s - (move.started_s + copy) <= longest_step  # ... within one replica-0 step of it
    assert move.arrived_s - move.left_s == pytest.approx(cluster.migrator.copy_seconds(0, 1, move.extra_blocks))
    assert result.migration["migrated_bytes"] == (move.copied_blocks + move.extra_blocks) * d.kv_block_bytes
    # the KV it carried is its whole sequence so far: its computed tokens' blocks when it left
    assert move.copied_blocks + move.extra_blocks == -(-move.computed // 16) and move.computed > 101
    assert result.prefix_hit_tokens == 0 and int((result.timeline["prefill_tokens"]).sum()) == 210


def test_without_migration_the_same_requests_preempt_on_the_pressured_replica():
    d, table = imbalanced()
    run = run_simulation(d, table, cost_model=LinearCostModel())
    assert list(run.requests["replica"]) == [0, 1, 0]
    assert int(run.requests["preemptions"].sum()) > 0
    assert "migration" not in run.summary


def test_the_copy_takes_its_blocks_over_nvlink():
    """Two single-GPU replicas on one node: the copy time is the blocks' bytes at 70 % of the
    H100's 450 GB/s NVLink plus the 8 us fixed cost."""
    from rllmsim.engine.cluster import Cluster
    from rllmsim.engine.clients import OpenLoop

    d, table = imbalanced(enable_migration=True)
    cluster = Cluster(d, LinearCostModel(), table, OpenLoop())
    assert cluster.migrator.copy_seconds(0, 1, 10) == pytest.approx(8e-6 + 10 * d.kv_block_bytes / (450e9 * 0.7))


@pytest.mark.parametrize("knobs, message", [
    (dict(enable_migration=True, replicas=1), "at least two replicas"),
    (dict(enable_migration=True, replicas=2, pipeline_parallel_size=2), "not modelled"),
    (dict(enable_migration=True, replicas=2, migration_interval_s=0.0), "migration_interval_s"),
])
def test_refused_migration_names_the_field_and_the_fix(knobs, message):
    with pytest.raises(ConfigError, match=message):
        small_deployment(**knobs)
