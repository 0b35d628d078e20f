"""A CPU KV tier beside the GPU pool: vLLM's KV offloading (`--kv-offloading-size`,
`--kv-offloading-backend native|lmcache`).

vLLM's offloading connectors copy computed KV blocks to host memory and, when a request is
admitted, look its prefix up there beyond what the GPU prefix cache holds; a hit is loaded back
instead of recomputed (vllm/distributed/kv_transfer/kv_connector/v1/offloading_connector.py,
lmcache_connector.py). The tier is LRU and, like the GPU pool here, keyed by prefix group: a
shared prefix, or a request's own blocks (what a preempted request needs back).

What each backend keeps:
- native: every full block a request computed, its output included: a preempted reasoning
  request gets its whole sequence back.
- lmcache: only the prompt (LMCache's `save_decode_cache` is off by default), in chunks of 256
  tokens (its `chunk_size`): a partial chunk is neither stored nor loaded.

Stores are asynchronous copies and cost no step time here. A load is charged to the step that
admits the request: the blocks' bytes over each GPU's host link (PCIe, or NVLink-C2C on Grace) at
`HOST_LINK_EFFICIENCY` (an assumption, not measured). vLLM's native connector loads
asynchronously while other requests keep stepping, so this charges a load to the whole batch
where vLLM charges it to the request alone.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

BACKENDS = ("native", "lmcache")
#: LMCache's default chunk: KV is stored and retrieved in whole chunks of this many tokens.
LMCACHE_CHUNK_TOKENS = 256
#: Assumption: share of the host link's per-direction peak that a KV copy achieves.
HOST_LINK_EFFICIENCY = 0.8


@dataclass(frozen=True)
class OffloadConfig:
    """A CPU tier of `capacity_blocks` pool blocks, loaded at `load_s_per_block` seconds a block."""

    backend: str
    capacity_blocks: int
    block_size: int
    load_s_per_block: float
    bytes_per_block: float  # over all the replica's GPUs: what a stored or loaded block moves

    def storable_blocks(self, prompt: int, computed: int) -> int:
        """Full blocks a request with `prompt` prompt tokens and `computed` computed tokens leaves
        in the tier: all of them (native), or its prompt's whole LMCache chunks."""
        if self.backend == "native":
            return computed // self.block_size
        return min(prompt, computed) // LMCACHE_CHUNK_TOKENS * LMCACHE_CHUNK_TOKENS // self.block_size


class CpuKVTier:
    """The host-memory tier of one engine core: cached blocks per prefix group, LRU."""

    def __init__(self, config: OffloadConfig) -> None:
        self.config = config
        self._blocks: OrderedDict[int, int] = OrderedDict()
        self._held = 0
        self.stored_blocks = 0
        self.loaded_blocks = 0
        self.queried_tokens = 0
        self.hit_tokens = 0

    def store(self, group: int, blocks: int) -> None:
        """Copy `group`'s first `blocks` blocks to the tier (more of a group replaces fewer),
        evicting the least recently used groups to make room."""
        have = self._blocks.get(group, 0)
        blocks = min(blocks, self.config.capacity_blocks)
        if blocks <= have:
            if have:
                self._blocks.move_to_end(group)
            return
        self.stored_blocks += blocks - have
        self._held += blocks - have
        self._blocks[group] = blocks
        self._blocks.move_to_end(group)
        while self._held > self.config.capacity_blocks:
            _, size = self._blocks.popitem(last=False)
            self._held -= size

    def lookup(self, group: int, usable_blocks: int) -> int:
        """Blocks of `group` the tier can give back, at most `usable_blocks` (and never more
        than a chunk boundary allows under LMCache)."""
        blocks = min(self._blocks.get(group, 0), usable_blocks)
        if self.config.backend == "lmcache":
            per_chunk = LMCACHE_CHUNK_TOKENS // self.config.block_size
            blocks = blocks // per_chunk * per_chunk
        if blocks:
            self._blocks.move_to_end(group)
        return blocks

    def give_back(self, own: int, shared: int, tokens: int, prefix_blocks: int) -> int:
        """Blocks the tier gives back to a request with no GPU cache hit and `tokens` known
        tokens: its `own` group's (left when it was preempted) or, up to its `prefix_blocks`, its
        `shared` prefix group's (-1: none; a longer member may have stored more), never its last
        token (recomputed, as on the GPU)."""
        usable = (tokens - 1) // self.config.block_size
        blocks = self.lookup(own, usable)
        return max(blocks, self.lookup(shared, min(usable, prefix_blocks))) if shared >= 0 else blocks

    def offload(self, groups: list[int], prompts: list[int], computed: list[int]) -> None:
        """Requests leaving the batch (finished or preempted) leave their blocks in the tier."""
        for group, prompt, done in zip(groups, prompts, computed):
            self.store(group, self.config.storable_blocks(prompt, done))

    def load_seconds(self, blocks: int) -> float:
        """Seconds a step spends loading `blocks` blocks (each GPU its share over its host link)."""
        return blocks * self.config.load_s_per_block

    def record_query(self, tokens: int, hit_blocks: int) -> None:
        """A request was looked up with `tokens` known tokens, and `hit_blocks` were loaded."""
        self.queried_tokens += tokens
        self.hit_tokens += hit_blocks * self.config.block_size
        self.loaded_blocks += hit_blocks


def offload_summary(tiers: list[CpuKVTier | None]) -> dict[str, float] | None:
    """The tiers' traffic summed over engine cores, for the run's summary; None without tiers.
    `recompute_tokens_saved` are the tokens loaded instead of recomputed."""
    tiers = [t for t in tiers if t is not None]
    if not tiers:
        return None
    c = tiers[0].config
    stored = sum(t.stored_blocks for t in tiers)
    loaded = sum(t.loaded_blocks for t in tiers)
    queried, hits = sum(t.queried_tokens for t in tiers), sum(t.hit_tokens for t in tiers)
    return {"backend": c.backend, "capacity_blocks": c.capacity_blocks, "offloaded_bytes": stored * c.bytes_per_block,
            "reloaded_bytes": loaded * c.bytes_per_block, "queried_tokens": queried, "hit_tokens": hits,
            "hit_rate": hits / queried if queried else 0.0, "recompute_tokens_saved": hits,
            "load_s": loaded * c.load_s_per_block}
