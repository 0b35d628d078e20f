"""Cache-aware routers: llm-d's weighted scorers and Dynamo's KV-router cost.

Both weigh where a request's shared prefix is likely cached (`PrefixIndex`) against how loaded
each replica is, because sending every request of a prefix to one replica saves its prefill but
can pile the load there. They differ in how:

- `WeightedScorers` (`kv-aware`) is llm-d's scheduler profile: each scorer maps every replica to
  [0, 1] (prefix-cache-scorer: the share of the request's blocks already cached there;
  kv-cache-utilization-scorer: 1 - the share of KV blocks in use; queue-scorer: the fewest
  outstanding requests 1, the most 0), the weighted sum ranks them and the max-score picker takes
  the best.
- `DynamoCost` (`dynamo-kv`) is Dynamo's KV router at temperature 0: the cost of a replica is
  overlap weight x the blocks it would still have to prefill + the KV blocks its running requests
  hold; the cheapest wins.

Ties go to the replica with the fewest outstanding requests, then the lowest index, so a pure
prefix scorer still spreads new prefixes by load and every choice is deterministic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from rllmsim.engine.prefix_index import PrefixIndex
from rllmsim.engine.replica import Replica
from rllmsim.engine.request import RequestLedger


class CacheAwareRouter(ABC):
    """What both cache-aware routers share: each request's prefix blocks, the replicas' likely
    cached prefixes, and the deterministic tie-break."""

    def __init__(self, ledger: RequestLedger, block_size: int, capacities: list[int]) -> None:
        self.ledger = ledger
        self.block_size = block_size
        self.index = PrefixIndex(capacities)

    def choose(self, rid: int, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        group = int(self.ledger.prefix_group[rid])
        prefix_blocks = int(self.ledger.prefix_tokens[rid]) // self.block_size
        request_blocks = -(-int(self.ledger.prompt[rid]) // self.block_size)
        matched = self.index.matched_blocks(group, prefix_blocks)
        choice = self.pick(self.rank(matched, request_blocks, replicas, outstanding, now), outstanding)
        self.index.routed(choice, group, prefix_blocks)
        return choice

    @abstractmethod
    def rank(self, matched: np.ndarray, request_blocks: int, replicas: Sequence[Replica],
             outstanding: np.ndarray, now: float) -> np.ndarray:
        """Per replica, a value the router maximises."""

    @staticmethod
    def pick(value: np.ndarray, outstanding: np.ndarray) -> int:
        """The highest value; ties to the fewest outstanding, then the lowest index."""
        best = value == value.max()
        return int(np.where(best, outstanding, np.iinfo(np.int64).max).argmin())


def kv_usage(replicas: Sequence[Replica], now: float) -> np.ndarray:
    """Each replica's share of KV blocks in use during its step in progress."""
    return np.array([r.kv_blocks_used(now) / r.kv_capacity_blocks for r in replicas])


class WeightedScorers(CacheAwareRouter):
    """llm-d's prefix-cache, kv-cache-utilization and queue scorers, weighted, max-score picked."""

    WEIGHTS = {"prefix": 3.0, "kv": 2.0, "queue": 2.0}

    def __init__(self, ledger: RequestLedger, block_size: int, capacities: list[int],
                 prefix: float, kv: float, queue: float) -> None:
        super().__init__(ledger, block_size, capacities)
        self.prefix, self.kv, self.queue = prefix, kv, queue

    def rank(self, matched: np.ndarray, request_blocks: int, replicas: Sequence[Replica],
             outstanding: np.ndarray, now: float) -> np.ndarray:
        score = self.prefix * matched / max(request_blocks, 1)
        if self.kv:
            score = score + self.kv * (1.0 - kv_usage(replicas, now))
        if self.queue:
            low, high = int(outstanding.min()), int(outstanding.max())
            queue = (high - outstanding) / (high - low) if high > low else np.ones(len(outstanding))
            score = score + self.queue * queue
        return score


class DynamoCost(CacheAwareRouter):
    """Dynamo's KV router cost: overlap x blocks to prefill + KV blocks in use, cheapest first."""

    WEIGHTS = {"overlap": 1.0}

    def __init__(self, ledger: RequestLedger, block_size: int, capacities: list[int], overlap: float) -> None:
        super().__init__(ledger, block_size, capacities)
        self.overlap = overlap

    def rank(self, matched: np.ndarray, request_blocks: int, replicas: Sequence[Replica],
             outstanding: np.ndarray, now: float) -> np.ndarray:
        in_use = np.array([r.kv_blocks_used(now) for r in replicas], dtype=np.float64)
        return -(self.overlap * (request_blocks - matched) + in_use)
