"""Live migration of running requests between replicas, as Llumnix does it (OSDI '24).

A global policy looks at the replicas every `migration_interval_s` at each one's virtual usage,
as Llumnix's freeness counts it: the KV blocks in use plus those its waiting requests need, over
its capacity. When one is at or above `HIGH_WATERMARK` and another at or below `LOW_WATERMARK`,
the pressured replica's newest decoding request, the one vLLM would preempt first, moves to the
roomiest one:

1. at the source's next step boundary its KV blocks start copying to the destination while it
   keeps decoding there (Llumnix's multi-stage copy);
2. when that copy is done, at the source's next step boundary, the request leaves the source
   (its blocks are freed) if the destination's virtual usage with it stays below the high mark,
   else the migration is abandoned and it stays;
3. the blocks it added meanwhile are copied (the downtime), then it joins the head of the
   destination's waiting queue with its KV present: admitted at the destination's next step
   boundary as a decode, nothing recomputed.

Copies cross the GPUs' interconnect when both replicas sit in one NVLink domain, else the
network between nodes (`links.py`).

The policy reads only what fast-forward cannot perturb (blocks in use via `kv_blocks_used`, the
waiting queue), and every action happens at a replica's step boundary, where an interrupted
fast-forwarded run stops, so `--step-by-step` gives the same timestamps.

Not modelled: Llumnix's other triggers (de-fragmentation for a queued long prompt, priorities,
scaling in and out), its freeness per running request (here, per replica), and a speculative
drafter's accepted-token state (restarted at the destination).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generator

import numpy as np

from rllmsim import parallel
from rllmsim.engine.batch import FIELD_INDEX
from rllmsim.engine.links import link

if TYPE_CHECKING:
    from rllmsim.engine.cluster import Cluster
    from rllmsim.engine.replica import Replica

#: Usage at or above which a replica sheds a request (Llumnix migrates out of instances whose
#: freeness falls below a threshold); an assumption, as is the low mark.
HIGH_WATERMARK = 0.9
#: Usage at or below which a replica (with nobody waiting) takes a request in.
LOW_WATERMARK = 0.7


@dataclass
class _Move:
    """One migration: who, from where to where, the blocks of each copy, and when it started
    copying, left the source and arrived."""

    rid: int
    source: int
    destination: int
    copied_blocks: int = 0
    extra_blocks: int = 0
    computed: int = 0  # tokens whose KV it carried
    started_s: float = float("nan")
    left_s: float = float("nan")
    arrived_s: float = float("nan")
    stage: str = "start"  # start -> copying -> leave -> done


@dataclass
class MigrationStats:
    abandoned: int = 0
    moves: list[_Move] = field(default_factory=list)  # completed moves, in the order they left


class Migrator:
    """The global migration policy and the moves it has under way."""

    def __init__(self, cluster: "Cluster", interval_s: float) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        d = cluster.deployment
        self.block_bytes = d.kv_block_bytes
        self._local, self._network = link(d, crosses_nodes=False), link(d, crosses_nodes=True)
        self._domain, self._gpus = parallel.nvlink_domain(d), d.gpus_per_replica
        self._moves: dict[int, _Move] = {}  # by source replica: one move out of a replica at a time
        self.stats = MigrationStats()

    def copy_seconds(self, source: int, destination: int, blocks: int) -> float:
        """Seconds to copy `blocks` KV blocks (each TP rank its share, in parallel)."""
        same_node = source * self._gpus // self._domain == destination * self._gpus // self._domain
        rate, fixed = self._local if same_node else self._network
        return fixed + blocks * self.block_bytes / rate

    # -- the policy -------------------------------------------------------------------------
    def run(self) -> Generator:
        """Look every interval until every request has arrived and none is outstanding."""
        cluster = self.cluster
        env = cluster.env
        while True:
            yield env.timeout(self.interval_s)
            if cluster.arrivals >= cluster.ledger.size and not cluster.outstanding.any() and not self._moves:
                return
            self._decide(env.now)

    def virtual_usage(self, replica: "Replica", now: float, extra_blocks: int = 0) -> float:
        """Blocks in use, plus those the waiting requests need and `extra_blocks`, over capacity."""
        ledger, pool = self.cluster.ledger, replica.scheduler.pool
        waiting = np.fromiter(replica.scheduler.waiting, dtype=np.int64)
        demand = int(np.sum(-(-(ledger.prompt[waiting] + ledger.generated[waiting]) // pool.block_size)))
        return (replica.kv_blocks_used(now) + demand + extra_blocks) / replica.kv_capacity_blocks

    def _decide(self, now: float) -> None:
        replicas = self.cluster.replicas
        usage = np.array([self.virtual_usage(r, now) for r in replicas])
        busy = set(self._moves) | {m.destination for m in self._moves.values()}
        pressured = [i for i in np.argsort(-usage, kind="stable").tolist()
                     if usage[i] >= HIGH_WATERMARK and i not in busy and len(replicas[i].scheduler.running)]
        roomy = [i for i in np.argsort(usage, kind="stable").tolist() if usage[i] <= LOW_WATERMARK and i not in busy]
        if pressured and roomy:
            source = pressured[0]
            self._moves[source] = _Move(-1, source, roomy[0])
            replicas[source]._wake_up()

    # -- at a replica's step boundary ---------------------------------------------------------
    def at_boundary(self, replica: "Replica") -> None:
        """Carry the move out of `replica` one stage further, if one is due."""
        move = self._moves.get(replica.index)
        if move is None or move.stage == "copying":
            return
        if move.stage == "start":
            self._start_copy(replica, move)
        else:
            self._leave(replica, move)

    def _start_copy(self, replica: "Replica", move: _Move) -> None:
        batch = replica.scheduler.running
        decoding = np.flatnonzero((batch.generated >= 1) & (batch.tokens - batch.computed == 1))
        if not len(decoding):
            del self._moves[replica.index]
            return
        row = int(decoding[-1])  # the newest decoding request: vLLM's next preemption victim
        move.rid = int(batch.rid[row])
        move.copied_blocks = int(batch.blocks[row] + batch.shared[row])
        move.started_s = self.cluster.env.now
        move.stage = "copying"
        self.cluster.env.process(self._after(self.copy_seconds(move.source, move.destination, move.copied_blocks),
                                             move, replica))

    def _after(self, seconds: float, move: _Move, replica: "Replica") -> Generator:
        yield self.cluster.env.timeout(seconds)
        move.stage = "leave"
        replica._wake_up()

    def _leave(self, replica: "Replica", move: _Move) -> None:
        del self._moves[replica.index]
        scheduler = replica.scheduler
        rows = np.flatnonzero(scheduler.running.rid == move.rid)
        destination = self.cluster.replicas[move.destination]
        if not len(rows):  # finished or preempted meanwhile
            self.stats.abandoned += 1
            return
        seq = scheduler.running.column(int(rows[0]))
        need = scheduler.pool.blocks_for(int(seq[FIELD_INDEX["tokens"]]))
        now = self.cluster.env.now
        if self.virtual_usage(destination, now, need) > HIGH_WATERMARK:
            self.stats.abandoned += 1
            return
        scheduler.release_sequence(int(rows[0]))
        move.extra_blocks = max(int(seq[FIELD_INDEX["blocks"]] + seq[FIELD_INDEX["shared"]]) - move.copied_blocks, 0)
        move.left_s, move.stage, move.computed = now, "done", int(seq[FIELD_INDEX["computed"]])
        self.stats.moves.append(move)
        self.cluster.move_outstanding(move.rid, move.source, move.destination)
        downtime = self.copy_seconds(move.source, move.destination, move.extra_blocks)
        self.cluster.env.process(self._arrive(downtime, move, destination))

    def _arrive(self, downtime: float, move: _Move, destination: "Replica") -> Generator:
        yield self.cluster.env.timeout(downtime)
        destination.scheduler.accept_migrated(move.rid, move.computed)
        destination._wake_up()
        move.arrived_s = self.cluster.env.now

    def summary(self) -> dict[str, float]:
        moves = self.stats.moves
        blocks = sum(m.copied_blocks + m.extra_blocks for m in moves)
        return {"interval_s": self.interval_s, "migrations": len(moves), "abandoned": self.stats.abandoned,
                "migrated_bytes": blocks * self.block_bytes * self.cluster.deployment.tp,
                "mean_copy_downtime_s": float(np.mean([m.arrived_s - m.left_s for m in moves])) if moves else 0.0}
