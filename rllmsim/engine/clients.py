"""Clients: the SimPy processes that send requests into the cluster.

- open loop: requests arrive at the times in the request table (Poisson, Gamma, a trace); with
  `max_concurrency` N, as `vllm bench serve --max-concurrency N`, each waits for one of N slots
  (FIFO) and is sent only when fewer than N are in flight;
- closed loop: N users, each sending its next request when the previous one finishes (plus an
  optional think time), as `vllm bench serve --max-concurrency` or a benchmark harness does;
- batch waves: send N requests at once, wait until all N finish, send the next N — the client of
  the reasoning-serving study, which exposes stragglers;
- sessions: multi-turn conversations that start at the table's arrival times and send each next
  turn a think time after the previous one completes (`rllmsim.workload.sessions`).

Arrivals are scheduled with SimPy's URGENT priority so that a request arriving exactly when a step
ends is visible to the scheduling decision made at that instant, in fast-forward and step-by-step
alike.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator, Protocol

import numpy as np
import simpy
from simpy.events import URGENT

if TYPE_CHECKING:
    from rllmsim.engine.cluster import Cluster


class UrgentTimeout(simpy.Event):
    """A timeout that fires before ordinary events scheduled for the same instant (arrivals, and
    in disaggregated serving the KV transfers landing)."""

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, URGENT, delay)


class Client(Protocol):
    name: str

    def drive(self, cluster: "Cluster") -> Generator:
        """The SimPy process body that submits every request of the ledger."""
        ...


@dataclass(frozen=True)
class OpenLoop:
    """Requests arrive at the table's `arrival_s`, whatever the cluster does.

    With `max_concurrency`, an arrival that finds all slots taken waits in a FIFO queue, as in
    `vllm bench serve` (an `asyncio.Semaphore(max_concurrency)` around each request). Its clock
    starts when it is sent: vLLM's request function starts its timer after the semaphore is
    acquired, so TTFT and E2EL exclude the client-side wait. The ledger's `arrival` therefore
    becomes the send time and `client_queue` holds the wait (vLLM's `queue_times`).
    """

    max_concurrency: int | None = None
    name: str = "open-loop"

    def drive(self, cluster: "Cluster") -> Generator:
        env, ledger = cluster.env, cluster.ledger
        arrivals = ledger.arrival
        if self.max_concurrency is None:
            for rid in range(ledger.size):
                delay = float(arrivals[rid]) - env.now
                if delay > 0:
                    yield UrgentTimeout(env, delay)
                cluster.submit(rid)
            return
        waiting: deque[int] = deque()
        free = [self.max_concurrency]

        def send(rid: int) -> None:
            ledger.client_queue[rid] = env.now - arrivals[rid]
            arrivals[rid] = env.now
            cluster.submit(rid, notify=True).callbacks.append(release)

        def release(_done: simpy.Event) -> None:
            if waiting:
                send(waiting.popleft())
            else:
                free[0] += 1

        for rid in range(ledger.size):
            delay = float(arrivals[rid]) - env.now
            if delay > 0:
                yield UrgentTimeout(env, delay)
            if free[0]:
                free[0] -= 1
                send(rid)
            else:
                waiting.append(rid)


@dataclass(frozen=True)
class ClosedLoop:
    """`users` concurrent users, each sending its next request when its last one completes."""

    users: int
    think_time_s: float = 0.0
    name: str = "closed-loop"

    def drive(self, cluster: "Cluster") -> Generator:
        env = cluster.env
        next_rid = iter(range(cluster.ledger.size))

        def user():
            for rid in next_rid:
                cluster.ledger.arrival[rid] = env.now
                yield cluster.submit(rid, notify=True)
                if self.think_time_s > 0:
                    yield UrgentTimeout(env, self.think_time_s)

        yield simpy.AllOf(env, [env.process(user()) for _ in range(self.users)])


@dataclass(frozen=True)
class Sessions:
    """Conversations of `turns` turns, laid out as `workload/sessions.py` builds them (request
    s * turns + k is turn k of conversation s): each first turn is sent at its `arrival_s`, each
    later turn `think_time_s` after the previous turn completes (or is rejected), which is when
    its arrival is set, since it depends on how fast the previous turn was served."""

    turns: int
    think_time_s: float = 0.0
    name: str = "sessions"

    def drive(self, cluster: "Cluster") -> Generator:
        env, arrivals = cluster.env, cluster.ledger.arrival

        def later_turns(first: int, done: simpy.Event) -> Generator:
            for rid in range(first + 1, first + self.turns):
                yield done
                if self.think_time_s > 0:
                    yield UrgentTimeout(env, self.think_time_s)
                arrivals[rid] = env.now
                done = cluster.submit(rid, notify=True)

        for first in range(0, cluster.ledger.size, self.turns):
            delay = float(arrivals[first]) - env.now
            if delay > 0:
                yield UrgentTimeout(env, delay)
            env.process(later_turns(first, cluster.submit(first, notify=True)))


@dataclass(frozen=True)
class BatchWaves:
    """Send `batch_size` requests at once and wait for all of them before the next batch."""

    batch_size: int
    name: str = "batch-waves"

    def drive(self, cluster: "Cluster") -> Generator:
        env, n = cluster.env, cluster.ledger.size
        for first in range(0, n, self.batch_size):
            wave = np.arange(first, min(first + self.batch_size, n))
            cluster.ledger.arrival[wave] = env.now
            yield simpy.AllOf(env, [cluster.submit(int(rid), notify=True) for rid in wave])
