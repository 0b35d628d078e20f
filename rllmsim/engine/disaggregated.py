"""Disaggregated serving: a prefill pool and a decode pool, with a KV transfer between them.

As vLLM runs it with the NixlConnector and its proxy (`examples/online_serving/
disaggregated_serving/`, toy_proxy_server.py): the proxy sends the request to a prefill instance
with max_tokens=1 and no streaming, so that instance computes the prompt and its first token and
keeps the prompt's KV; the proxy then sends the original request to a decode instance and streams
that instance's response to the client. The decode instance pulls the KV (`decode_instance.py`),
recomputes the last prompt token and samples from there, so the prefill's token is discarded.

TTFT therefore runs from arrival to the decode instance's first token: prefill queue + prefill +
the wait for KV room on the decode instance + the transfer + the wait for a decode step + that
step. Every client-facing field comes from the decode instance; the prefill instance's progress
lives in its own ledger. Both pools take the same `--router` policy, one router each.

The prefill instance keeps a finished request's blocks until its KV has landed on the decode
instance (`prefill_instance.py`). Not modelled: a prefix-cache hit on the decode instance (vLLM
loads only the uncached tail; the whole prompt is transferred here) and the proxy's own time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import simpy

from rllmsim import spec_decode
from rllmsim.cost.base import CostModel
from rllmsim.disaggregation import Disaggregation
from rllmsim.engine.clients import Client, UrgentTimeout
from rllmsim.engine.cluster import Cluster, apply_max_model_len, scheduler_config
from rllmsim.engine.decode_instance import DecodeReplica, DecodeScheduler
from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.pd_ledger import DisaggregatedLedger
from rllmsim.engine.prefill_instance import PrefillReplica, PrefillScheduler
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.router import make_router
from rllmsim.metrics.histogram import LogHistogram
from rllmsim.metrics.timeline import TimelineRecorder


class PoolCostModels(NamedTuple):
    """One cost model per pool (their GPUs and TP may differ)."""

    prefill: CostModel
    decode: CostModel

    def provenance(self) -> dict:
        """The decode pool's (it times most steps), with the prefill pool's beside it."""
        return {**self.decode.provenance(), "prefill_pool": self.prefill.provenance()}


class DisaggregatedCluster(Cluster):
    """The two pools behind their routers, fed by a client, in one SimPy environment.

    A `Cluster` whose replicas are both pools, prefill first (replica and timeline index 0..N-1,
    then decode N..N+M-1), so arrivals, rejections, completions and the run's result are the
    colocated cluster's; only routing differs: an arrival goes to a prefill instance, a finished
    prefill to a decode instance. `__init__` builds the pools in place of `Cluster`'s replicas."""

    def __init__(self, pools: Disaggregation, cost_models: PoolCostModels, requests: pd.DataFrame, client: Client,
                 router: str = "round-robin", fast_forward: bool = True,
                 rng: np.random.Generator | None = None) -> None:
        self.pools = pools
        self.deployment = pools.decode  # what `Cluster.run` reads: the run's KV capacity is decode's
        self.env = simpy.Environment()
        self.ledger = DisaggregatedLedger(requests)
        self.client = client
        self.timeline = TimelineRecorder()
        self.itl = LogHistogram()
        self._waiters: dict[int, simpy.Event] = {}
        self.migrator = None  # live migration is refused with pools (`rllmsim.disaggregation`)
        self.truncated_outputs = apply_max_model_len(self.ledger, pools.decode.max_model_len)
        self.prefill_ledger = RequestLedger(requests)
        self.prefill_ledger.target[:] = 1  # the proxy's max_tokens=1
        self.prefill_ledger.tracks_answer = False
        if pools.decode.speculative_method:
            rng = rng if rng is not None else np.random.default_rng(0)
            self.ledger.accept_rate[:] = spec_decode.request_rate_units(pools.decode, self.ledger.size, rng)
        self._transfer_s = pools.transfer_seconds(self.ledger.prompt)
        self.ledger.kv_bytes[:] = pools.prompt_kv_bytes(self.ledger.prompt)
        self.prefill = self._prefill_pool(cost_models.prefill, fast_forward)
        self.decode = self._decode_pool(cost_models.decode, fast_forward)
        self.replicas = [*self.prefill, *self.decode]
        block = pools.decode.block_size
        self.prefill_router = make_router(router, self.prefill_ledger, block, [r.kv_capacity_blocks for r in self.prefill])
        self.decode_router = make_router(router, self.ledger, block, [r.kv_capacity_blocks for r in self.decode])
        self.outstanding = np.zeros(len(self.replicas), dtype=np.int64)
        first = pools.prefill.replicas
        self.prefill_outstanding, self.decode_outstanding = self.outstanding[:first], self.outstanding[first:]
        self.arrivals = 0

    def _prefill_pool(self, cost_model: CostModel, fast_forward: bool) -> list[PrefillReplica]:
        p, config = self.pools.prefill, scheduler_config(self.pools.prefill)
        return [PrefillReplica(self.env, i,
                               PrefillScheduler(config, BlockPool(p.num_gpu_blocks, p.block_size), self.prefill_ledger),
                               cost_model, self.timeline, self.itl, fast_forward=fast_forward,
                               on_finish=self._prefilled)
                for i in range(p.replicas)]

    def _decode_pool(self, cost_model: CostModel, fast_forward: bool) -> list[DecodeReplica]:
        d, config, first = self.pools.decode, scheduler_config(self.pools.decode), self.pools.prefill.replicas
        return [DecodeReplica(self.env, first + j,
                              DecodeScheduler(config, BlockPool(d.num_gpu_blocks, d.block_size), self.ledger,
                                              functools.partial(self._start_transfer, j)),
                              cost_model, self.timeline, self.itl, fast_forward=fast_forward,
                              on_finish=self._finished)
                for j in range(d.replicas)]

    def _route(self, rid: int) -> None:
        """An arrival goes to the prefill instance the prefill router picks."""
        index = self.prefill_router.choose(rid, self.prefill, self.prefill_outstanding, self.env.now)
        self.prefill_outstanding[index] += 1
        self.prefill_ledger.replica[rid] = self.ledger.prefill_replica[rid] = index
        self.prefill[index].enqueue(rid)

    def _prefilled(self, replica: int, rids: np.ndarray, now: float) -> None:
        """The prefill instance answered the proxy: the request goes to a decode instance."""
        self.prefill_outstanding[replica] -= len(rids)
        ledger, prefill = self.ledger, self.prefill_ledger
        ledger.prefill_done[rids] = now
        ledger.first_scheduled[rids] = prefill.first_scheduled[rids]
        ledger.cached_tokens[rids] = prefill.cached_tokens[rids]
        ledger.preemptions[rids] += prefill.preemptions[rids]
        for rid in rids.tolist():
            index = self.decode_router.choose(rid, self.decode, self.decode_outstanding, now)
            self.decode_outstanding[index] += 1
            ledger.replica[rid] = index
            self.decode[index].receive(rid)

    def _start_transfer(self, decode: int, rid: int, now: float) -> None:
        """Blocks allocated on decode instance `decode` at `now`: its workers pull the prompt's KV."""
        end = now + float(self._transfer_s[rid])
        self.ledger.kv_transfer_start[rid] = now
        self.ledger.kv_ready[rid] = end
        landed = UrgentTimeout(self.env, max(0.0, end - self.env.now))
        landed.callbacks.append(lambda _event: self._landed(decode, rid))

    def _landed(self, decode: int, rid: int) -> None:
        """The KV is on the decode instance, which tells the prefill instance to free its copy."""
        self.decode[decode].deliver(rid)
        self.prefill[int(self.ledger.prefill_replica[rid])].release(rid)


def pool_cost_models(pools: Disaggregation, cost_model: CostModel | PoolCostModels | None = None, kind: str = "auto",
                     kernel_tables: str | Path | None = None) -> PoolCostModels:
    """Each pool's cost model: as given (one model for both, as tests give a hand-checkable one),
    else the `kind` (`rllmsim.cost.select`) for that pool's GPU and TP, plus a speculative
    proposer's cost on decode. Ready `PoolCostModels` pass through."""
    from rllmsim.cost.select import cost_model_for
    from rllmsim.cost.speculative import speculative_cost_model

    if isinstance(cost_model, PoolCostModels):
        return cost_model
    prefill = cost_model or cost_model_for(pools.prefill, kind, kernel_tables)
    decode = cost_model or cost_model_for(pools.decode, kind, kernel_tables)
    return PoolCostModels(prefill, speculative_cost_model(decode, pools.decode))
