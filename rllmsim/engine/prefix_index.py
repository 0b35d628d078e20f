"""The router's own record of which replica holds which shared prefix.

llm-d's approximate prefix-cache scorer and Dynamo's KV router without KV events both remember
where they sent each prefix instead of asking the engines; the simulator does the same, for a
reason of its own: a fast-forwarded replica applies a run's steps (and so publishes or evicts
prefixes) only when the run ends, so its block pool at an arrival instant is not the pool a
step-by-step replica has then. The routing history is the same in both, so routing on it keeps
fast-forward equal to step-by-step.

Each replica's record holds at most its KV capacity in prefix blocks (llm-d's
lruCapacityPerServer) and forgets the least recently routed prefix first, as the replica's own
cache evicts the least recently released one. A lookup is one dict access per request.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class PrefixIndex:
    """Prefix group -> (replica -> prefix blocks routed there), bounded per replica."""

    def __init__(self, capacities: list[int]) -> None:
        self._capacity = list(capacities)
        self._held = [0] * len(capacities)
        self._lru: list[OrderedDict[int, int]] = [OrderedDict() for _ in capacities]
        self._holders: dict[int, dict[int, int]] = {}

    def matched_blocks(self, group: int, blocks: int) -> np.ndarray:
        """Per replica, how many of a request's `blocks` prefix blocks of `group` it likely holds."""
        matched = np.zeros(len(self._capacity), dtype=np.int64)
        for replica, held in self._holders.get(group, {}).items():
            matched[replica] = min(held, blocks)
        return matched

    def routed(self, replica: int, group: int, blocks: int) -> None:
        """A request with `blocks` prefix blocks of `group` went to `replica`: it will hold them."""
        if group < 0 or blocks <= 0:
            return
        lru = self._lru[replica]
        old = lru.pop(group, 0)
        size = max(old, blocks)
        lru[group] = size
        self._held[replica] += size - old
        self._holders.setdefault(group, {})[replica] = size
        while self._held[replica] > self._capacity[replica] and len(lru) > 1:
            evicted, evicted_size = lru.popitem(last=False)
            self._held[replica] -= evicted_size
            holders = self._holders[evicted]
            del holders[replica]
            if not holders:
                del self._holders[evicted]
