"""How a model's attention layers share the KV block pool: vLLM v1's hybrid KV cache manager.

vLLM sorts attention layers by kind and cuts each kind into KV cache groups of one size (the
fewest layers of any kind, or the most when the kinds differ by less than 1.5x;
`v1/core/kv_cache_utils.py` `_get_kv_cache_groups_uniform_page_size`). One pool block holds
`block_size` tokens of one group's layers, and every group allocates from the same pool:

- a full-attention group holds ceil(tokens / B) blocks per request;
- a sliding-window group frees the blocks that fall wholly before the window
  (`SlidingWindowManager.remove_skipped_blocks`, run on the tokens computed so far before each
  step allocates), so during a step that computes n tokens on top of c it holds
  ceil((c + n) / B) - max(0, c - w + 1) // B blocks: a chunk plus the window, and about w / B + 1
  blocks once decoding;
- admission under `scheduler_reserve_full_isl` reserves a sliding group's blocks for the whole
  prompt but at most `max_admission_blocks_per_request`: ceil((w - 1 + max_num_batched_tokens) /
  B) + 1 (`v1/kv_cache_interface.py` `SlidingWindowSpec`).

gpt-oss (18 full and 18 sliding layers of 128 tokens) gets one group of each: a pool block holds
18 layers, so the pool has twice the blocks a full-attention model of that size would have, and
a long request needs barely more than half the memory per token.

A model without sliding layers is one group of all its layers and the scheduler skips every
sliding-window term. Modelled simplifications: a prefix-cache hit shares the full-attention
blocks only (each request keeps private copies of its window's blocks), a step's frees are counted
before its allocations, and a layout without exactly one full-attention group is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rllmsim.errors import ConfigError
from rllmsim.specs import ModelSpec

#: vLLM's threshold below which unequal layer counts share the larger count as the group size.
_GROUP_SIZE_RATIO = 1.5


@dataclass(frozen=True)
class KVLayout:
    """The block pool's groups: `layers_per_block` layers per block, one full-attention group and
    `sliding_groups` groups that keep only the last `window` tokens."""

    block_size: int
    layers_per_block: int
    sliding_groups: int = 0
    window: int = 0
    admission_cap: int = 0  # sliding-group blocks the admission gate reserves at most per group

    @property
    def hybrid(self) -> bool:
        return self.sliding_groups > 0

    def window_blocks(self, computed: np.ndarray | int, new: np.ndarray | int) -> np.ndarray | int:
        """Blocks the sliding groups hold during a step computing `new` tokens on top of
        `computed` (element-wise; 0 where both are 0)."""
        skipped = np.maximum(computed - self.window + 1, 0) // self.block_size
        return self.sliding_groups * (-(-(computed + new) // self.block_size) - skipped)

    def decode_window_bound(self, tokens: int) -> int:
        """The most blocks the sliding groups hold while a sequence of `tokens` decodes: its
        blocks, up to a window that need not start at a block's start."""
        return self.sliding_groups * min(-(-tokens // self.block_size), -(-(self.window - 1) // self.block_size) + 1)

    def window_reserve(self, tokens: int) -> int:
        """Sliding-group blocks the admission gate reserves for a sequence of `tokens`."""
        return self.sliding_groups * min(-(-tokens // self.block_size), self.admission_cap)

    def run_window_deltas(self, computed: np.ndarray, held: np.ndarray, horizon: int) -> np.ndarray:
        """Sliding blocks allocated (negative: freed) in each step of a decode run, summed over
        the sequences: step m computes position computed + m of each one, which holds `held`
        sliding blocks before the run. Step 0 is exact; from step 1 a block is allocated where
        a position starts one, and freed where the window's tail passes a block's end."""
        deltas = np.zeros(horizon, dtype=np.int64)
        if horizon == 0 or not len(computed):
            return deltas
        B = self.block_size
        deltas[0] = int(np.add.reduce(self.window_blocks(computed, 1))) - int(np.add.reduce(held))
        steps = np.arange(1, horizon, dtype=np.int64)
        allocated = np.bincount(computed % B, minlength=B)[(-steps) % B]
        tail = computed - self.window + 1  # the first token still in the window after step m is tail + m
        freed = np.bincount(tail % B, minlength=B)[(-steps) % B]
        # residues also count the tails not yet past the sequence start (tail + m <= 0), which free nothing
        for start in tail[tail < 0].tolist():
            wrong = np.arange(-start, 0, -B)
            np.subtract.at(freed, wrong[wrong < horizon] - 1, 1)
        deltas[1:] = self.sliding_groups * (allocated - freed)
        return deltas


def kv_layout(model: ModelSpec, block_size: int, max_num_batched_tokens: int, max_model_len: int) -> KVLayout:
    """The layout vLLM builds for `model`; one group of every layer without sliding windows."""
    attention = model.attention
    if not attention.has_sliding_window:
        return KVLayout(block_size, model.num_layers)
    sliding = attention.num_sliding_layers
    full = model.num_layers - sliding
    group = min(full, sliding)
    if max(full, sliding) < group * _GROUP_SIZE_RATIO:
        group = max(full, sliding)
    if full == 0 or math.ceil(full / group) > 1:
        raise ConfigError(
            f"{model.name}: {full} full-attention and {sliding} sliding-window layers make "
            f"{math.ceil(full / group) if full else 0} full-attention KV groups; only layouts with one are modelled")
    cap = _admission_cap(attention.sliding_window, block_size, max_num_batched_tokens, max_model_len)
    return KVLayout(block_size, group, math.ceil(sliding / group), attention.sliding_window, cap)


def _admission_cap(window: int, block_size: int, max_num_batched_tokens: int, max_model_len: int) -> int:
    """vLLM's `SlidingWindowSpec.max_admission_blocks_per_request` with one batch in flight."""
    return -(-min(window - 1 + max_num_batched_tokens, max_model_len) // block_size) + 1
