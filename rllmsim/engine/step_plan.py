"""What a scheduling step is made of: the engine arguments that shape it, the plan it produces,
and what admitting the waiting head would take (`rllmsim.engine.scheduler` uses all three)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rllmsim.cost.features import StepFeatures
from rllmsim.engine.kv_layout import KVLayout
from rllmsim.engine.kv_offload import OffloadConfig


@dataclass(frozen=True)
class SchedulerConfig:
    """The vLLM engine arguments that shape scheduling."""

    max_num_seqs: int
    max_num_batched_tokens: int
    enable_chunked_prefill: bool = True
    num_speculative_tokens: int = 0
    enable_prefix_caching: bool = False
    #: vLLM's admission gate: a waiting (or preempted) request joins only if the free blocks hold
    #: all its known tokens (prompt, plus output so far when resumed) beyond its prefix-cache hit;
    #: off, only the blocks of the chunk it is scheduled are checked.
    scheduler_reserve_full_isl: bool = True
    #: how the layers share the pool; None: one group of every layer (no sliding windows)
    kv_layout: KVLayout | None = None
    #: a CPU KV tier beside the pool (`kv_offload.py`); None: none
    offload: OffloadConfig | None = None


@dataclass
class StepPlan:
    """One scheduled step: tokens per running sequence (aligned with the batch after
    scheduling), which of them decode, and what changed in the batch."""

    sched: np.ndarray
    is_decode: np.ndarray
    features: StepFeatures
    preempted: int
    admitted: int
    #: seconds the step spends loading admitted requests' KV from the CPU tier
    load_s: float = 0.0

    @property
    def pure_decode(self) -> bool:
        """Every running sequence decodes and the batch did not change."""
        return self.preempted == 0 and self.admitted == 0 and bool(self.is_decode.all())


class HeadAdmission(NamedTuple):
    """Admitting the waiting head: its known tokens and output so far, its prefix group, prefix
    blocks and cache hit, the tokens it is scheduled, the blocks they take (full attention, then
    sliding windows), the free blocks the admission gate requires, the blocks it loads from the
    CPU tier (computed without a GPU cache hit), and the tokens whose KV it finds present (cache
    hit, CPU load, or the KV a migration brought)."""

    tokens: int
    generated: int
    group: int
    prefix_blocks: int
    hit_blocks: int
    take: int
    need: int
    window: int
    required: int
    loaded: int
    hit: int
