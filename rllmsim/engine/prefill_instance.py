"""A prefill instance of disaggregated serving: it keeps a finished request's KV until it is read.

vLLM's NixlConnector (`request_finished` returns `delay_free_blocks=True` for a request with
`do_remote_decode`): when the prefill instance finishes a request (its one token), the request's
blocks are not freed; the decode instance reads them and notifies the prefill instance, which
frees them then. So a decode pool short of KV room, which delays the pull, also fills the prefill
pool. Here the blocks the request held privately are taken back right after it retires and freed
when its transfer lands (`release`). Not modelled: vLLM's abort timeout
(VLLM_NIXL_ABORT_REQUEST_TIMEOUT) that frees blocks nobody read, and the shared prefix blocks
the request referenced, which are dereferenced at once.
"""

from __future__ import annotations

import numpy as np

from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.replica import Replica
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.scheduler import Scheduler, SchedulerConfig


class PrefillScheduler(Scheduler):
    """vLLM's scheduler on a prefill instance: finished requests' blocks wait for the decode side."""

    def __init__(self, config: SchedulerConfig, pool: BlockPool, ledger: RequestLedger) -> None:
        super().__init__(config, pool, ledger)
        self.held: dict[int, int] = {}  # request -> blocks kept for its transfer

    @property
    def outstanding(self) -> int:
        """Requests this engine core can step; none while nothing runs and only blocks kept for
        transfers keep the waiting head out (a transfer landing frees them and wakes the core)."""
        count = len(self.running) + len(self.waiting)
        if len(self.running) or not self.waiting or not self.held:
            return count
        head = self._head_admission(self.config.max_num_batched_tokens)
        return count if head is not None and head.required <= self.pool.free else 0

    def _retire_finished(self) -> np.ndarray:
        batch = self.running
        done = batch.generated >= batch.target
        rids, blocks = batch.rid[done], batch.blocks[done] + batch.window[done]
        finished = super()._retire_finished()
        if len(finished):
            self.pool.take(int(np.add.reduce(blocks)))
            self.held.update(zip(rids.tolist(), blocks.tolist()))
        return finished

    def release(self, rid: int) -> None:
        self.pool.release(self.held.pop(rid))


class PrefillReplica(Replica):
    """A replica whose finished requests' KV stays until the decode instance has read it."""

    scheduler: PrefillScheduler

    def release(self, rid: int) -> None:
        """The decode instance has read the request's KV: its blocks are free from now."""
        self.scheduler.release(rid)
        self._wake_up()
