"""vLLM v1's step policy for one replica.

Each step has a token budget (`max_num_batched_tokens`). Running requests are served first, in
admission order: a decoding sequence takes one token (plus k proposed tokens to verify under
speculative decoding), a prefilling one takes as much of its remaining prompt as the budget allows
(chunked prefill). Every scheduled token needs a KV slot; when a running request cannot get a
block, the most recently admitted running request is preempted (its blocks freed, its progress
recomputed later) until the block fits or the request itself was the one preempted. Only in a step
without preemptions are waiting requests admitted, first come first served, while
`max_num_seqs`, the budget and the free blocks allow. With `scheduler_reserve_full_isl` (on by
default, as in vLLM 0.19) a waiting or preempted request is admitted only when the free blocks
hold its whole sequence, not just its first chunk; the first request that fails stops admission.

Blocks are allocated when a step is scheduled, tokens are emitted when it ends: a prefilling
sequence whose computed tokens reach its known tokens samples one token; a decoding sequence emits
one token, or under speculative decoding its accepted tokens plus one (see `speculation.py`).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from rllmsim.cost.features import StepFeatures, step_row
from rllmsim.engine import speculation
from rllmsim.engine.answer import AnswerWatch
from rllmsim.engine.batch import FIELD_INDEX, RunningBatch
from rllmsim.engine.kv_cache import BlockPool
from rllmsim.engine.kv_offload import CpuKVTier
from rllmsim.engine.kv_layout import KVLayout
from rllmsim.engine.request import RequestLedger
from rllmsim.engine.scheduler_runs import NO_REQUESTS, DecodeRunPlanning, StepOutcome
from rllmsim.engine.step_plan import HeadAdmission, SchedulerConfig, StepPlan
from rllmsim.metrics.histogram import LogHistogram

# the ufuncs' own reductions: ndarray.sum/any/all detour through Python wrappers, which costs more
# than the arithmetic on the small arrays this module handles millions of times
_total, _any, _all = np.add.reduce, np.logical_or.reduce, np.logical_and.reduce


class Scheduler(DecodeRunPlanning):
    """Running batch, waiting queue and KV pool of one replica, advanced one step at a time
    (and, through `DecodeRunPlanning`, many decode steps at once)."""

    def __init__(self, config: SchedulerConfig, pool: BlockPool, ledger: RequestLedger) -> None:
        self.config = config
        self.pool = pool
        self.ledger = ledger
        self.running = RunningBatch()
        self.waiting: deque[int] = deque()
        self.spec = config.num_speculative_tokens
        self.answers = AnswerWatch(ledger)
        self.layout = config.kv_layout or KVLayout(pool.block_size, 0)
        self.hybrid_kv = self.layout.hybrid
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        self.cpu_tier = CpuKVTier(config.offload) if config.offload else None
        self.staged: dict[int, int] = {}  # migrated-in requests waiting here: computed tokens whose KV arrived
        self._loaded_blocks = 0  # loaded from the CPU tier by the step being scheduled
        # True after a fast-forwarded run: every running sequence is then decoding, which saves
        # re-checking it before the next run (the common case at a request's finish)
        self._all_decoding = False

    @property
    def outstanding(self) -> int:
        return len(self.running) + len(self.waiting)

    @property
    def window_blocks_held(self) -> int:
        """Blocks the running sequences' sliding-window layers hold (0 without such layers)."""
        return int(_total(self.running.window)) if self.hybrid_kv else 0

    # -- one step -------------------------------------------------------------------------
    def schedule(self, now: float) -> StepPlan:
        """Choose the next step's work and allocate its KV blocks."""
        batch, pool = self.running, self.pool
        decoding, self._all_decoding = self._all_decoding and not self.spec, False
        budget = self.config.max_num_batched_tokens
        if decoding and len(batch) <= budget:
            plan = self._schedule_decoding_batch(budget, now)
            if plan is not None:
                return plan
        want = self._wanted_tokens()
        if int(_total(want)) <= budget:
            sched = want
        else:
            before = np.add.accumulate(want) - want
            sched = np.minimum(want, np.maximum(budget - before, 0))
        # a sequence holds at least ceil(computed / block_size) blocks, so an unscheduled one
        # needs none; speculative lookahead slots may already be held
        need = np.maximum(_ceil_div(batch.computed + sched, pool.block_size) - batch.blocks - batch.shared, 0)
        total_need = int(_total(need))
        if self.hybrid_kv:
            window = np.where(sched > 0, self.layout.window_blocks(batch.computed, sched), batch.window)
            total_need += int(_total(window - batch.window))
        preempted = 0
        if total_need <= pool.free:
            pool.change(total_need)
            batch.blocks += need
            if self.hybrid_kv:
                batch.window = window
        else:
            sched, preempted = self._schedule_with_preemption(want, budget)
        budget -= int(_total(sched))
        joined = self._admit(budget, now) if preempted == 0 else []
        if joined:
            sched = np.concatenate((sched, [take for take, _, _ in joined]))
        computed = batch.computed
        is_decode = (sched > 0) & (batch.generated >= 1) & (computed == batch.tokens - 1)
        return StepPlan(sched, is_decode, _step_features(sched, computed, is_decode), preempted, len(joined),
                        self._load_seconds())

    def _schedule_decoding_batch(self, budget: int, now: float) -> StepPlan | None:
        """`schedule` when every running sequence decodes one token (after a fast-forwarded run:
        the step at each arrival). A decoding sequence holds exactly ceil(computed / B) blocks, so
        it needs a new one when its computed tokens fill their last block, and the step's features
        are the decodes' sums plus those of whoever joins. None, with nothing changed, when the
        blocks do not fit: the general path preempts."""
        batch, pool = self.running, self.pool
        n = len(batch)
        computed = batch.computed
        need = computed % pool.block_size == 0
        total_need = int(np.count_nonzero(need))
        if self.hybrid_kv:
            window = self.layout.window_blocks(computed, 1)
            total_need += int(_total(window - batch.window))
        if total_need > pool.free:
            return None
        pool.change(total_need)
        batch.blocks += need
        if self.hybrid_kv:
            batch.window = window
        decode_kv = int(_total(computed))
        joined = self._admit(budget - n, now)
        sched = np.ones(n + len(joined), dtype=np.int64)
        is_decode = np.ones(n + len(joined), dtype=bool)
        chunks, decodes = [], n
        for i, (take, context, decode) in enumerate(joined, start=n):
            sched[i] = take
            if decode:
                decodes += 1
                decode_kv += context
            else:
                chunks.append((take, context))
                is_decode[i] = False
        features = StepFeatures.one_step(step_row(chunks, decodes, decodes, decode_kv))
        return StepPlan(sched, is_decode, features, 0, len(joined), self._load_seconds())

    def _wanted_tokens(self) -> np.ndarray:
        batch = self.running
        remaining = batch.tokens - batch.computed
        if not self.spec:
            return remaining
        decoding = (batch.generated >= 1) & (remaining == 1)
        return remaining + self.spec * decoding

    def apply(self, plan: StepPlan, end: float, itl: LogHistogram) -> StepOutcome:
        """Finish a step at time `end`: advance computed tokens, emit, retire finished requests.

        `itl` receives the inter-token gap of every sequence that emitted after its first token.
        """
        batch = self.running
        if self.spec:
            emitted = self._apply_speculative(plan)
        else:
            computed = batch.computed
            computed += plan.sched
            emitted = (plan.sched > 0) & (computed == batch.tokens)
            batch.generated += emitted
            batch.tokens += emitted
        return self._record_emissions(emitted, end, itl)

    def _record_emissions(self, emitted: np.ndarray, end: float, itl: LogHistogram) -> StepOutcome:
        """After the running sequences' tokens were advanced (`emitted` per sequence, at `end`):
        publish computed prefixes, record token times and answers, retire the finished."""
        batch, ledger = self.running, self.ledger
        if self.config.enable_prefix_caching and _any(batch.prefix_blocks):
            self._publish_prefixes()
        rids = batch.rid[emitted > 0]
        last = ledger.last_token[rids]
        had_token = last == last  # not NaN
        if _any(had_token):
            itl.add(end - last[had_token])
        ledger.first_token[rids[~had_token]] = end
        ledger.last_token[rids] = end
        if ledger.tracks_answer and self.answers.may_cross(1 + self.spec):
            ledger.mark_answer(batch.rid, batch.generated, end)
            self.answers.rebase(batch.rid, batch.generated)
        return StepOutcome(int(_total(emitted)), self._retire_finished())

    def _publish_prefixes(self) -> None:
        """Sequences whose computed tokens now cover their group's prefix publish its full blocks,
        or extend the shorter cached prefix they reference (each sequence tries once; a group
        cached meanwhile by another keeps that copy). Published blocks move from the sequence's
        own to the shared ones it references."""
        batch, pool = self.running, self.pool
        ready = np.flatnonzero((batch.prefix_blocks > 0) & (batch.computed >= batch.prefix_blocks * pool.block_size))
        for i in ready.tolist():
            blocks = int(batch.prefix_blocks[i])
            moved = pool.cache_prefix(int(batch.group[i]), blocks, referenced=bool(batch.shared[i]))
            if moved:
                batch.blocks[i] -= moved
                batch.shared[i] += moved
                if self.cpu_tier is not None:
                    self.cpu_tier.store(int(batch.group[i]), blocks)
            batch.prefix_blocks[i] = 0

    def _apply_speculative(self, plan: StepPlan) -> np.ndarray:
        """Decoding sequences emit their accepted tokens + 1 (never more than they verified or
        still owe); prefilling ones emit one token when their prompt completes."""
        batch, sched, dec = self.running, plan.sched, plan.is_decode
        gain = speculation.emitted_after(batch.accepted, batch.accept_rate, 1)
        gain = np.minimum(np.minimum(gain, sched), batch.target - batch.generated)
        batch.accepted += np.where(dec, batch.accept_rate, 0)
        batch.computed += np.where(dec, gain, sched)
        emitted = np.where(dec, gain, (sched > 0) & (batch.computed == batch.tokens)).astype(np.int64)
        batch.generated += emitted
        batch.tokens += emitted
        return emitted

    def _retire_finished(self) -> np.ndarray:
        """Retire the requests that emitted their last token; each finished when it did."""
        batch, ledger = self.running, self.ledger
        done = batch.generated >= batch.target
        if not _any(done):
            return NO_REQUESTS
        done_rids = batch.rid[done]
        if self.cpu_tier is not None:
            self.cpu_tier.offload(_own_group(done_rids).tolist(), ledger.prompt[done_rids].tolist(),
                                  batch.computed[done].tolist())
        ledger.finish[done_rids] = ledger.last_token[done_rids]
        ledger.generated[done_rids] = batch.generated[done]
        self.pool.release(int(_total(batch.blocks[done] + batch.window[done])))
        if self.config.enable_prefix_caching and _any(batch.shared):
            for group in batch.group[done & (batch.shared > 0)].tolist():
                self.pool.dereference(group)
        batch.keep(~done)
        return done_rids

    # -- preemption and admission ---------------------------------------------------------
    def _schedule_with_preemption(self, want: np.ndarray, budget: int) -> tuple[np.ndarray, int]:
        """The rare path: walk running requests in order, preempting the newest for blocks.

        What each sequence is scheduled and needs does not depend on who is preempted after it
        (only later ones are), so both are computed for all at once and the walk only compares
        and preempts."""
        batch, pool = self.running, self.pool
        before = np.add.accumulate(want) - want
        takes = np.minimum(want, np.maximum(budget - before, 0))
        need = np.maximum(_ceil_div(batch.computed + takes, pool.block_size) - batch.blocks - batch.shared, 0)
        grow = need
        if self.hybrid_kv:
            window = self.layout.window_blocks(batch.computed, takes)
            grow = need + window - batch.window
        sched = np.zeros(len(batch), dtype=np.int64)
        preempted = done = 0
        limit = int(np.count_nonzero(before < budget))
        while done < (stop := min(limit, len(batch))):  # preemptions shorten the batch
            done += self._take_while_free(grow[done:stop])
            if done >= stop:
                break
            blocks = int(grow[done])  # sequence `done` needs more than is free: preempt the newest
            while blocks > pool.free and done < len(batch):
                self._preempt_newest()
                preempted += 1
            if done >= len(batch):
                break
            pool.change(blocks)
            done += 1
        batch.blocks[:done] += need[:done]
        if self.hybrid_kv:
            batch.window[:done] = window[:done]
        sched = sched[:len(batch)]
        sched[:done] = takes[:done]
        return sched, preempted

    def _take_while_free(self, grow: np.ndarray) -> int:
        """Allocate the blocks of the leading sequences of `grow` that fit in the free blocks as
        they are, one after another; returns how many did. The walk one sequence at a time found
        the same (sequence k fits iff the first k changes sum to at most what was free), and one
        allocation of their sum evicts the same cached prefixes as their separate allocations
        (a release in between would not: then each change is applied in turn)."""
        total = np.add.accumulate(grow)
        fit = int(np.count_nonzero(np.minimum.accumulate(total <= self.pool.free)))
        if fit:
            if (grow[:fit] >= 0).all():
                self.pool.change(int(total[fit - 1]))
            else:
                for blocks in grow[:fit][grow[:fit] != 0].tolist():
                    self.pool.change(blocks)
        return fit

    def release_sequence(self, index: int) -> None:
        """Take running sequence `index` out of the batch with its blocks (a migration moving it
        elsewhere); the ledger keeps its output so far."""
        batch = self.running
        rid, shared = int(batch.rid[index]), int(batch.shared[index])
        self.pool.release(int(batch.blocks[index] + batch.window[index]))
        if shared > 0:
            self.pool.dereference(int(batch.group[index]))
        self.ledger.generated[rid] = int(batch.generated[index])
        batch.keep(np.arange(len(batch)) != index)

    def accept_migrated(self, rid: int, computed: int) -> None:
        """A request migrated here with the KV of `computed` tokens joins the head of the waiting
        queue; admitting it needs blocks for its whole sequence but recomputes nothing."""
        self.staged[rid] = computed
        self.waiting.appendleft(rid)

    def _preempt_newest(self) -> None:
        """Preempt by recompute. With prefix caching the freed blocks keep their contents (vLLM
        returns them to the free queue still hashed), so the request may hit them on readmission
        unless they are evicted first."""
        seq = self.running.pop_last()
        rid, blocks, shared = int(seq[FIELD_INDEX["rid"]]), int(seq[FIELD_INDEX["blocks"]]), int(seq[FIELD_INDEX["shared"]])
        self.pool.release(blocks + int(seq[FIELD_INDEX["window"]]))
        if shared > 0:
            self.pool.dereference(int(seq[FIELD_INDEX["group"]]))
        elif self.config.enable_prefix_caching:
            full = int(seq[FIELD_INDEX["computed"]]) // self.pool.block_size
            self.pool.keep_released(_own_group(rid), min(full, blocks))
        if self.cpu_tier is not None:
            self.cpu_tier.offload([_own_group(rid)], [int(self.ledger.prompt[rid])],
                                  [int(seq[FIELD_INDEX["computed"]])])
        generated = int(seq[FIELD_INDEX["generated"]])
        self.ledger.generated[rid] = generated
        self.ledger.preemptions[rid] += 1
        self.waiting.appendleft(rid)

    def _admit(self, budget: int, now: float) -> list[tuple[int, int, bool]]:
        """Admit waiting requests in order while sequences, budget and blocks allow. Returns, for
        each, the tokens it is scheduled, the cached context before them, and whether that is a
        decode (a preempted request whose cached blocks cover all but its last token).

        The blocks checked are those of the scheduled chunk, or under `scheduler_reserve_full_isl`
        those of the whole sequence (vLLM's `can_fit_full_sequence`): in both, blocks of the
        prefix-cache hit are not needed again, but an unreferenced cached prefix counts, since
        referencing it takes it out of the free pool. A request that fails waits at the head."""
        batch, pool, ledger, cfg = self.running, self.pool, self.ledger, self.config
        joined: list[tuple[int, int, bool]] = []
        self._loaded_blocks = 0
        while self.waiting and len(batch) < cfg.max_num_seqs and budget > 0:
            rid = self.waiting[0]
            head = self._head_admission(budget)
            if head is None or head.required > pool.free:
                break
            tokens, generated, group, prefix_blocks, hit_blocks, take, need, window, _, loaded, hit = head
            migrated = bool(self.staged) and self.staged.pop(rid, None) is not None
            if hit_blocks:
                pool.reference(group)
            pool.take(need + window)
            self.waiting.popleft()
            if ledger.tracks_answer:
                self.answers.admit(rid, generated)
            publish = prefix_blocks if prefix_blocks > hit_blocks else 0  # a longer prefix extends the group's
            batch.append(rid, tokens, hit, generated, int(ledger.target[rid]), need,
                         int(ledger.accept_rate[rid]), group, hit_blocks, publish, window)
            if cfg.enable_prefix_caching and not migrated:
                self.prefix_query_tokens += tokens
                self.prefix_hit_tokens += hit_blocks * pool.block_size
            if self.cpu_tier is not None and not hit_blocks and not migrated:
                self.cpu_tier.record_query(tokens, loaded)
                self._loaded_blocks += loaded
            if ledger.first_scheduled[rid] != ledger.first_scheduled[rid]:  # NaN: never scheduled
                ledger.first_scheduled[rid] = now
                ledger.cached_tokens[rid] = hit
            joined.append((take, hit, generated >= 1 and hit == tokens - 1))
            budget -= take
        return joined

    def _head_admission(self, budget: int) -> HeadAdmission | None:
        """What admitting the waiting head with `budget` tokens left would take, or None when
        it cannot join whatever the blocks (without chunked prefill its prompt must fit the budget)."""
        pool, ledger, cfg = self.pool, self.ledger, self.config
        rid = self.waiting[0]
        generated = int(ledger.generated[rid])
        tokens = int(ledger.prompt[rid]) + generated
        if self.staged and rid in self.staged:  # migrated in: its KV is here, in private blocks
            group, prefix_blocks, hit_blocks, loaded, hit = -1, 0, 0, 0, self.staged[rid]
        else:
            group, prefix_blocks, hit_blocks = self._prefix_lookup(rid, tokens)
            loaded = (self.cpu_tier.give_back(_own_group(rid), group, tokens, prefix_blocks)
                      if self.cpu_tier is not None and not hit_blocks else 0)
            hit = (hit_blocks + loaded) * pool.block_size
        if not cfg.enable_chunked_prefill and tokens - hit > budget:
            return None
        take = min(tokens - hit, budget)
        need = pool.blocks_for(hit + take) - hit_blocks
        window = int(self.layout.window_blocks(hit, take)) if self.hybrid_kv else 0
        if cfg.scheduler_reserve_full_isl:
            reserve = pool.blocks_for(tokens) - hit_blocks
            if self.hybrid_kv:
                reserve += self.layout.window_reserve(tokens)
        else:
            reserve = need + window
        required = reserve + (pool.reference_cost(group) if hit_blocks else 0)
        return HeadAdmission(tokens, generated, group, prefix_blocks, hit_blocks, take, need, window, required, loaded,
                             hit)

    def _load_seconds(self) -> float:
        """Seconds the step being scheduled spends loading KV from the CPU tier."""
        return self.cpu_tier.load_seconds(self._loaded_blocks) if self._loaded_blocks else 0.0

    def _prefix_lookup(self, rid: int, tokens: int) -> tuple[int, int, int]:
        """(group, full prefix blocks, cached blocks usable now) for a request about to be
        admitted. As in vLLM, the last prompt token is always recomputed, so a hit never covers
        the whole prompt."""
        if not self.config.enable_prefix_caching:
            return -1, 0, 0
        own = self.pool.cached_blocks(_own_group(rid))
        if own:
            return _own_group(rid), 0, min(own, (tokens - 1) // self.pool.block_size)
        group = int(self.ledger.prefix_group[rid])
        if group < 0:
            return -1, 0, 0
        prefix_blocks = int(self.ledger.prefix_tokens[rid]) // self.pool.block_size
        hit_blocks = min(self.pool.cached_blocks(group), prefix_blocks, (tokens - 1) // self.pool.block_size)
        return group, prefix_blocks, hit_blocks


def _own_group(rid: int | np.ndarray) -> int | np.ndarray:
    """The private prefix-cache key of a preempted request (shared groups are >= 0, -1 is none)."""
    return -2 - rid


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)


def _step_features(sched: np.ndarray, computed: np.ndarray, is_decode: np.ndarray,
                   decodes: tuple[int, int, int] = (0, 0, 0)) -> StepFeatures:
    """The step's features, with the same definitions as `StepFeatures.from_shapes`; `decodes`
    adds (sequences, tokens, cached context) of decodes not in the arrays."""
    chunk = np.where(is_decode, 0, sched)  # prefill tokens per sequence, 0 where decoding or idle
    prefill = chunk > 0
    prefill_tokens = int(_total(chunk))
    decode_seqs, decode_tokens, decode_kv = decodes
    row = np.array([
        prefill_tokens,
        np.count_nonzero(prefill),
        _total(chunk * computed + chunk * (chunk + 1) // 2),
        prefill_tokens + _total(computed * prefill),
        decode_seqs + np.count_nonzero(is_decode),
        decode_tokens + _total(sched) - prefill_tokens,
        decode_kv + _total(computed * is_decode),
    ], dtype=np.int64)
    return StepFeatures(*row[:, None])
