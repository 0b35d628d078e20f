"""The paged KV block pool of one replica.

vLLM allocates KV memory in fixed-size blocks of `block_size` tokens; a sequence holding c
computed tokens owns ceil(c / block_size) blocks. The pool only needs counts: which block a
sequence owns never changes how long a step takes.
"""

from __future__ import annotations


class BlockPool:
    """A fixed number of KV blocks, allocated and released by count."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.capacity = int(num_blocks)
        self.block_size = int(block_size)
        self.free = int(num_blocks)

    @property
    def used(self) -> int:
        return self.capacity - self.free

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold `tokens` tokens (ceiling division)."""
        return -(-tokens // self.block_size)

    def allocate(self, blocks: int) -> bool:
        """Take `blocks` blocks if that many are free; False (and nothing taken) otherwise."""
        if blocks > self.free:
            return False
        self.free -= blocks
        return True

    def release(self, blocks: int) -> None:
        self.free += blocks
        assert self.free <= self.capacity, "released more KV blocks than were allocated"
