"""The paged KV block pool of one replica, with vLLM's automatic prefix caching.

vLLM allocates KV memory in fixed-size blocks of `block_size` tokens; a sequence holding c
computed tokens owns ceil(c / block_size) blocks. Which block a sequence owns never changes how
long a step takes, so the pool only counts.

Prefix caching is modelled per prefix group (requests that share their first tokens: a system
prompt, few-shot examples, a conversation's history), plus one private group per preempted
request, whose computed blocks stay cached after preemption so its recompute can hit them. Once
one request of a group has computed the shared prefix, its full blocks stay cached: later
requests of the group reference them instead of recomputing. A cached prefix nobody references is free (vLLM counts it in the free queue and in
neither KV usage) but keeps its contents until the space is needed; then the least recently
released prefix is evicted first. A request that references a group's cached prefix and
computes a longer one (the next turn of a conversation, whose prompt is the previous turn's prompt
and answer plus a new message) extends the group's cached prefix with its own blocks.
"""

from __future__ import annotations

from collections import OrderedDict


class BlockPool:
    """A fixed number of KV blocks, allocated and released by count, with cached prefixes."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.capacity = int(num_blocks)
        self.block_size = int(block_size)
        self.free = int(num_blocks)
        self._cached: dict[int, int] = {}        # prefix group -> cached blocks
        self._refs: dict[int, int] = {}          # prefix group -> running requests referencing it
        self._evictable: OrderedDict[int, int] = OrderedDict()  # unreferenced groups, LRU first
        self._evictable_blocks = 0

    @property
    def used(self) -> int:
        return self.capacity - self.free

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold `tokens` tokens (ceiling division)."""
        return -(-tokens // self.block_size)

    def take(self, blocks: int) -> None:
        """Allocate `blocks` free blocks (the caller checked they are free), evicting the least
        recently used unreferenced prefixes when uncached free blocks run short."""
        shortfall = blocks - (self.free - self._evictable_blocks)
        while shortfall > 0:
            group, size = self._evictable.popitem(last=False)
            del self._cached[group]
            self._evictable_blocks -= size
            shortfall -= size
        self.free -= blocks

    def allocate(self, blocks: int) -> bool:
        """Take `blocks` blocks if that many are free; False (and nothing taken) otherwise."""
        if blocks > self.free:
            return False
        self.take(blocks)
        return True

    def change(self, blocks: int) -> None:
        """Take `blocks` blocks (the caller checked they are free), or release -`blocks` when
        negative: a step whose sliding-window layers free more than it allocates."""
        if blocks >= 0:
            self.take(blocks)
        else:
            self.release(-blocks)

    def release(self, blocks: int) -> None:
        self.free += blocks
        assert self.free <= self.capacity, "released more KV blocks than were allocated"

    # -- prefix caching -------------------------------------------------------------------
    def cached_blocks(self, group: int) -> int:
        """Blocks of `group`'s prefix currently cached (0 when none)."""
        return self._cached.get(group, 0)

    def reference_cost(self, group: int) -> int:
        """Free blocks that referencing `group` would take out of the free count."""
        return self._cached[group] if group in self._evictable else 0

    def reference(self, group: int) -> None:
        """A request starts using `group`'s cached prefix."""
        if group in self._evictable:
            size = self._evictable.pop(group)
            self._evictable_blocks -= size
            self.free -= size
        self._refs[group] = self._refs.get(group, 0) + 1

    def dereference(self, group: int) -> None:
        """A request stops using the prefix; the last one leaves it cached but evictable."""
        self._refs[group] -= 1
        if self._refs[group] == 0:
            del self._refs[group]
            size = self._cached[group]
            self._evictable[group] = size
            self._evictable_blocks += size
            self.free += size

    def keep_released(self, group: int, blocks: int) -> None:
        """Blocks just released (already counted free) keep their contents as an unreferenced,
        evictable cached prefix of `group`: what a preempted request leaves behind."""
        if group in self._cached or blocks <= 0:
            return
        self._cached[group] = blocks
        self._evictable[group] = blocks
        self._evictable_blocks += blocks

    def cache_prefix(self, group: int, blocks: int, referenced: bool = False) -> int:
        """A request that computed `blocks` full prefix blocks publishes them for its group and
        keeps referencing them. Returns how many of its own blocks moved to the group: all
        `blocks` when the group was not cached; when it was, the blocks past the cached prefix if
        the request references that prefix (`referenced`: a conversation's next turn extends its
        history), else none (it keeps its own copy, as vLLM does).

        Only a referencing request extends: the group is then pinned (not evictable), so the
        extension moves blocks the request already holds and the free count does not change."""
        cached = self._cached.get(group, 0)
        if not cached:
            self._cached[group] = blocks
            self._refs[group] = 1
            return blocks
        if not referenced or blocks <= cached:
            return 0
        self._cached[group] = blocks
        return blocks - cached
