"""The grid of batch shapes a profile measures, and the checks that it can run.

A plan has three families of steps:

- pure prefill: `num_prompts` prompts of `prompt_len` tokens arrive together and are prefilled
  (one step when they fit the token budget; chunked steps with cached context otherwise);
- pure decode: `batch` sequences whose prompts hold `context` tokens decode together;
- mixed: while a decode cell's batch is running, one new prompt of `chunk` tokens arrives, so the
  next step is the decode batch plus that prefill chunk (chunked further if the budget is short).

Every recorded step's features are computed from what the engine actually scheduled, so a step
that differs from the planned shape (a chunk split by the token budget, a sequence a step ahead of
the others) is still measured exactly; the plan only decides which shapes the engine is driven
through. This module is pure Python: it never imports vllm.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

from rllmsim.errors import ConfigError


@dataclass(frozen=True)
class PrefillCell:
    prompt_len: int
    num_prompts: int

    @property
    def key(self) -> str:
        return f"prefill/L{self.prompt_len}xN{self.num_prompts}"


@dataclass(frozen=True)
class DecodeCell:
    batch: int
    context: int

    @property
    def key(self) -> str:
        return f"decode/B{self.batch}xC{self.context}"


@dataclass(frozen=True)
class ProfilePlan:
    """What to measure. Lengths are tokens; counts are sequences.

    repetitions: measured repetitions of every prefill cell and of every mixed chunk.
    decode_steps: measured decode steps per decode cell (each one a repetition of that shape,
        with the context one token longer).
    warmup_steps: unmeasured decode steps at the start of each decode cell; the engine also runs
        a short warm-up (recorded with phase "warmup") before the first cell.
    retry_factor: a measurement slowed by another process (see `contention`) is repeated, up to
        retry_factor times the planned count.
    """

    prefill_lens: tuple[int, ...] = ()
    prefill_counts: tuple[int, ...] = (1,)
    decode_batches: tuple[int, ...] = ()
    decode_contexts: tuple[int, ...] = ()
    mixed_chunks: tuple[int, ...] = ()
    repetitions: int = 3
    decode_steps: int = 8
    warmup_steps: int = 2
    retry_factor: int = 3
    seed: int = 0
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for label in ("prefill_lens", "prefill_counts", "decode_batches", "decode_contexts",
                      "mixed_chunks"):
            values = tuple(int(v) for v in getattr(self, label))
            if any(v < 1 for v in values):
                raise ConfigError(f"plan {label} must be positive integers, got {list(values)}")
            object.__setattr__(self, label, tuple(sorted(set(values))))
        if (self.repetitions < 1 or self.decode_steps < 1 or self.warmup_steps < 0
                or self.retry_factor < 1):
            raise ConfigError("plan needs repetitions >= 1, decode_steps >= 1, warmup_steps >= 0, "
                              "retry_factor >= 1")
        if self.prefill_lens and not self.prefill_counts:
            raise ConfigError("plan has prefill_lens but no prefill_counts")
        if bool(self.decode_batches) != bool(self.decode_contexts):
            raise ConfigError("plan needs both decode_batches and decode_contexts, or neither")
        if self.mixed_chunks and not self.decode_batches:
            raise ConfigError("plan mixed_chunks ride on decode cells: give decode_batches too")
        if not self.prefill_lens and not self.decode_batches:
            raise ConfigError("plan is empty: give prefill_lens and/or decode_batches")

    # ----- cells -------------------------------------------------------------------------------
    def prefill_cells(self) -> list[PrefillCell]:
        return [PrefillCell(L, n) for L, n in itertools.product(self.prefill_lens,
                                                                 self.prefill_counts)]

    def decode_cells(self) -> list[DecodeCell]:
        return [DecodeCell(b, c) for b, c in itertools.product(self.decode_batches,
                                                                self.decode_contexts)]

    def decode_growth(self, cell: DecodeCell, token_budget: int) -> int:
        """Upper bound on the tokens a decode cell's sequence generates before the cell ends:
        steps while the other prompts are still being prefilled (early sequences decode
        alongside), warm-up, measured decode steps, and the steps of every mixed repetition."""
        room = max(token_budget - cell.batch, 1)
        setup = math.ceil(cell.batch * cell.context / token_budget) + 1
        mixed = sum(self.repetitions * math.ceil(c / room) for c in self.mixed_chunks)
        return setup + self.warmup_steps + self.retry_factor * (self.decode_steps + mixed) + 2

    def planned_steps(self) -> dict[str, int]:
        """Measured steps the plan asks for (at least; chunked prefills add more)."""
        prefill = len(self.prefill_cells()) * self.repetitions
        decode = len(self.decode_cells()) * self.decode_steps
        mixed = len(self.decode_cells()) * len(self.mixed_chunks) * self.repetitions
        return {"prefill": prefill, "decode": decode, "mixed": mixed,
                "total": prefill + decode + mixed}

    # ----- checks ------------------------------------------------------------------------------
    def max_seqs_needed(self) -> int:
        need = max(self.prefill_counts) if self.prefill_lens else 1
        if self.decode_batches:
            need = max(need, max(self.decode_batches) + (1 if self.mixed_chunks else 0))
        return need

    def max_len_needed(self, token_budget: int) -> int:
        need = (max(self.prefill_lens) + 1) if self.prefill_lens else 1
        for cell in self.decode_cells():
            need = max(need, cell.context + self.decode_growth(cell, token_budget))
        if self.mixed_chunks:
            need = max(need, max(self.mixed_chunks) + 1)
        return need

    def peak_blocks(self, block_size: int, token_budget: int) -> int:
        """Most KV blocks any cell holds at once (no prefix sharing: prefix caching is off)."""
        def blocks(tokens: int) -> int:
            return math.ceil(tokens / block_size)

        peak = 0
        for cell in self.prefill_cells():
            peak = max(peak, cell.num_prompts * blocks(cell.prompt_len + 1))
        extra = blocks(max(self.mixed_chunks) + 1) if self.mixed_chunks else 0
        for cell in self.decode_cells():
            seq = blocks(cell.context + self.decode_growth(cell, token_budget))
            peak = max(peak, cell.batch * seq + extra)
        return peak

    def check_engine_limits(self, max_num_seqs: int, max_model_len: int,
                            token_budget: int) -> None:
        """Refuse, before the engine starts, a grid the engine settings cannot run."""
        if token_budget < 1:
            raise ConfigError(f"max_num_batched_tokens must be positive, got {token_budget}")
        if self.max_seqs_needed() > max_num_seqs:
            raise ConfigError(
                f"the grid needs {self.max_seqs_needed()} concurrent sequences but max_num_seqs "
                f"is {max_num_seqs}: raise --max-num-seqs or shrink the decode batches")
        need = self.max_len_needed(token_budget)
        if need > max_model_len:
            raise ConfigError(
                f"the grid needs sequences of {need} tokens but max_model_len is {max_model_len}: "
                f"raise --max-model-len or shrink the prompt/context lengths")

    def check_fits_pool(self, num_gpu_blocks: int, block_size: int, token_budget: int) -> None:
        """Refuse a grid whose largest cell does not fit the KV pool (it would preempt)."""
        usable = num_gpu_blocks - 1  # vLLM keeps one null block out of the pool
        need = self.peak_blocks(block_size, token_budget)
        if need > usable:
            raise ConfigError(
                f"the grid does not fit the KV pool: its largest cell needs {need} blocks of "
                f"{block_size} tokens but the engine has {usable} usable blocks; give the cache "
                f"more memory (--kv-cache-memory) or shrink the largest batch x context")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["planned_steps"] = self.planned_steps()
        return out


def parse_int_list(text: str | None) -> tuple[int, ...] | None:
    """'64,128,256' -> (64, 128, 256); None or '' -> None (keep the preset's value)."""
    if text is None or text.strip() == "":
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"expected a comma-separated list of integers, got {text!r}") from None


#: Named grids. "ci" runs in under a minute on two CPU cores with the tiny model; "cpu" is the
#: shipped CPU profile (a few minutes); "gpu" suits a 7B model on one 80 GB GPU (its largest
#: decode cell, 96 x 8k tokens, needs about 0.82 M KV tokens: 46 GB for Qwen2-7B in bf16).
PRESETS: dict[str, ProfilePlan] = {
    "ci": ProfilePlan(
        prefill_lens=(32, 128, 512), prefill_counts=(1, 4),
        decode_batches=(1, 8, 32), decode_contexts=(64, 512),
        mixed_chunks=(64, 384), repetitions=2, decode_steps=4, warmup_steps=1, name="ci"),
    "cpu": ProfilePlan(
        prefill_lens=(16, 64, 128, 256, 512, 1024, 2048, 4096), prefill_counts=(1, 2, 4, 8),
        decode_batches=(1, 2, 4, 8, 16, 32, 64), decode_contexts=(128, 512, 1024, 2048),
        mixed_chunks=(32, 256, 1024), repetitions=3, decode_steps=8, warmup_steps=2, name="cpu"),
    "gpu": ProfilePlan(
        prefill_lens=(64, 256, 1024, 2048, 4096, 8192), prefill_counts=(1, 2, 4, 8),
        decode_batches=(1, 2, 4, 8, 16, 32, 64, 96),
        decode_contexts=(256, 1024, 4096, 8192),
        mixed_chunks=(64, 512, 2048), repetitions=5, decode_steps=16, warmup_steps=4,
        name="gpu"),
}


def make_plan(preset: str, **overrides) -> ProfilePlan:
    """A preset with some fields replaced (None values keep the preset's)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown grid preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = asdict(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    if any(v is not None for v in overrides.values()):
        base["name"] = f"{preset}+custom"
    return ProfilePlan(**base)
