"""Walks an in-process vLLM engine through a `ProfilePlan`, one `step()` at a time.

Admission is controlled so that each step has the planned shape: a prefill cell adds its
prompts to an idle engine; a decode cell admits its batch, steps until every sequence decodes,
then measures decode steps, then adds one prompt at a time on top of the running batch (mixed
steps). Every step that schedules tokens becomes a profile row, whatever its phase; a measured
step slowed by another process (`contention`) is kept, flagged, and measured again.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from rllmsim.profile.contention import RunQueueProbe, is_contended, others_busy_cores
from rllmsim.profile.plan import DecodeCell, PrefillCell, ProfilePlan
from rllmsim.profile.vllm_runner import EngineSettings, StepRecorder, engine_core, step_row
from rllmsim.profile.writer import ProfileWriter


class Driver:
    def __init__(self, engine, plan: ProfilePlan, settings: EngineSettings, writer: ProfileWriter,
                 stats_sink: list, log: Callable[[str], None], quiet_timeout_s: float = 0.0,
                 quiet_cores: float = 0.5):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.engine = engine
        self.scheduler = engine_core(engine).scheduler
        self.recorder = StepRecorder(self.scheduler,
                                     int(engine.vllm_config.cache_config.num_gpu_blocks))
        self.plan, self.settings, self.writer, self.log = plan, settings, writer, log
        self.stats_sink = stats_sink
        self.rng = np.random.default_rng(plan.seed)
        self.vocab = int(engine.model_config.get_vocab_size())
        self.max_model_len = int(engine.model_config.max_model_len)
        self._TokensPrompt, self._SamplingParams = TokensPrompt, SamplingParams
        self._next_id = 0
        self._internal: dict[str, str] = {}
        self._probe = RunQueueProbe()
        self._t0 = time.perf_counter()
        self._streak = 0
        self.mismatches = 0
        self.contended_steps = 0
        self.quiet_timeout_s, self.quiet_cores = quiet_timeout_s, quiet_cores
        self.quiet_wait_s = 0.0

    # ----- requests and steps ------------------------------------------------------------------
    def submit(self, n: int, prompt_len: int, max_tokens: int) -> list[str]:
        params = self._SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens,
                                      ignore_eos=True, detokenize=False,
                                      temperature=self.settings.temperature,
                                      top_p=self.settings.top_p)
        ids = []
        for _ in range(n):
            rid = f"p{self._next_id}"
            self._next_id += 1
            tokens = self.rng.integers(10, self.vocab, size=prompt_len).tolist()
            internal = self.engine.add_request(rid, self._TokensPrompt(prompt_token_ids=tokens),
                                               params)
            # vLLM suffixes ids internally; the scheduler knows only the internal one.
            self._internal[rid] = internal if isinstance(internal, str) else rid
            ids.append(rid)
        return ids

    def step(self, cell: str, phase: str) -> tuple[set[str], dict[str, Any] | None]:
        """One engine step; records it if it scheduled tokens.

        Returns the ids of requests that finished and the recorded row (None if none)."""
        self.stats_sink.clear()
        self._probe.start()
        t0 = time.perf_counter()
        outputs = self.engine.step()
        wall = time.perf_counter() - t0
        wait = self._probe.stop()
        finished = {o.request_id for o in outputs if getattr(o, "finished", False)}
        captured = self.recorder.take()
        if captured is None or captured["scheduled_tokens"] == 0:
            return finished, None
        row = step_row(captured, self.stats_sink[-1] if self.stats_sink else None)
        if row["vllm_ctx_tokens"] >= 0 and (
                row["vllm_ctx_tokens"] + row["vllm_gen_tokens"] != row["scheduled_tokens"]):
            self.mismatches += 1
        contended = is_contended(wait, wall)
        self.contended_steps += contended
        row.update({"step": len(self.writer.rows), "cell": cell, "phase": phase, "wall_s": wall,
                    "t_s": t0 - self._t0, "runq_wait_s": wait, "contended": contended})
        self.writer.add(row)
        return finished, row

    def drain(self, cell: str, phase: str, ids: list[str]) -> list[dict[str, Any]]:
        """Step until `ids` finish; returns the rows recorded meanwhile."""
        pending, rows = set(ids), []
        for _ in range(100_000):
            if not pending:
                for rid in ids:
                    self._internal.pop(rid, None)
                return rows
            done, row = self.step(cell, phase)
            if row is not None:
                rows.append(row)
            pending = {r for r in pending if r not in done and self._internal[r] not in done}
        raise RuntimeError(f"requests {sorted(pending)[:5]} never finished")

    def settle(self) -> None:
        """Let the engine forget finished/aborted requests (0-token steps are not recorded)."""
        for _ in range(8):
            if not self.scheduler.has_requests():
                return
            self.step("idle", "idle")
        raise RuntimeError("the engine did not go idle between cells")

    def wait_quiet(self) -> None:
        """Wait (up to quiet_timeout_s) until other processes use under quiet_cores cores."""
        if self.quiet_timeout_s <= 0:
            return
        start = time.monotonic()
        others = others_busy_cores(0.3)
        if not others >= self.quiet_cores:  # also when unknown (NaN)
            return
        self.log(f"waiting for a quiet machine: other processes keep {others:.1f} cores busy")
        while time.monotonic() - start < self.quiet_timeout_s:
            others = others_busy_cores(1.0)
            if others < self.quiet_cores:
                break
        self.quiet_wait_s += time.monotonic() - start

    def _clean(self, rows: list[dict[str, Any]]) -> bool:
        """True when no row was contended; otherwise wait for quiet (or back off) first."""
        if rows and not any(r["contended"] for r in rows):
            self._streak = 0
            return True
        self._streak += 1
        if self.quiet_timeout_s > 0:
            self.wait_quiet()
        else:
            time.sleep(min(0.1 * self._streak, 2.0))
        return False

    def _decoding(self, ids: list[str]) -> bool:
        reqs = self.scheduler.requests
        return all(reqs[self._internal[r]].num_computed_tokens
                   >= reqs[self._internal[r]].num_prompt_tokens for r in ids)

    # ----- cells -------------------------------------------------------------------------------
    def run_prefill(self, cell: PrefillCell, repetitions: int, phase: str = "prefill",
                    retry: bool = True) -> None:
        clean = attempts = 0
        limit = repetitions * (self.plan.retry_factor if retry else 1)
        while clean < repetitions and attempts < limit:
            attempts += 1
            rows = self.drain(cell.key, phase, self.submit(cell.num_prompts, cell.prompt_len, 1))
            clean += self._clean(rows) if retry else 1
            self.settle()

    def run_decode(self, cell: DecodeCell, warmup: int, steps: int, chunks: tuple[int, ...],
                   repetitions: int, phase: str | None = None) -> None:
        retry = self.plan.retry_factor if phase is None else 1
        ids = self.submit(cell.batch, cell.context, self.max_model_len - cell.context - 1)
        while not self._decoding(ids):
            self.step(cell.key, phase or "setup")
        for _ in range(warmup):
            self.step(cell.key, "warmup")
        clean = attempts = 0
        while clean < steps and attempts < steps * retry:
            attempts += 1
            _, row = self.step(cell.key, phase or "decode")
            clean += self._clean([row] if row else []) if phase is None else 1
        for chunk in chunks:
            clean = attempts = 0
            while clean < repetitions and attempts < repetitions * retry:
                attempts += 1
                rows = self.drain(cell.key, phase or "mixed", self.submit(1, chunk, 1))
                clean += self._clean(rows) if phase is None else 1
        self.engine.abort_request(ids)
        for rid in ids:
            self._internal.pop(rid, None)
        self.settle()

    def warm_up(self) -> None:
        """A few small shapes of each kind before anything is measured (phase "warmup")."""
        budget = self.settings.max_num_batched_tokens
        self.run_prefill(PrefillCell(min(256, budget - 1), 1), 2, "warmup", retry=False)
        self.run_prefill(PrefillCell(min(64, budget // 4), 4), 1, "warmup", retry=False)
        self.run_decode(DecodeCell(4, 64), 0, 4, (32,), 1, phase="warmup")

    def run(self) -> None:
        plan = self.plan
        prefill, decode = plan.prefill_cells(), plan.decode_cells()
        total = len(prefill) + len(decode)
        self.warm_up()
        self.writer.flush()
        cells: list[PrefillCell | DecodeCell] = [*prefill, *decode]
        for i, cell in enumerate(cells, 1):
            self.wait_quiet()
            if isinstance(cell, PrefillCell):
                self.run_prefill(cell, plan.repetitions)
            else:
                self.run_decode(cell, plan.warmup_steps, plan.decode_steps, plan.mixed_chunks,
                                plan.repetitions)
            self.writer.flush()
            self.log(f"[{i}/{total}] {cell.key}: {len(self.writer.rows)} steps recorded, "
                     f"{self.contended_steps} contended")
