"""Routers: which replica serves an arriving request.

A registry maps names to classes, so a new policy is a new class plus one line. Every router sees
the replicas' state at the arrival instant; ties go to the lowest replica index, so routing is
deterministic and needs no random draws. The cluster keeps each replica's outstanding count
(running + waiting) in one array, so the common policies cost one `argmin` per request rather than
a Python loop over replicas.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from rllmsim.engine.replica import Replica
from rllmsim.errors import ConfigError


class Router(Protocol):
    def choose(self, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        """Index of the replica that gets the next request; `outstanding[i]` is replica i's
        running plus waiting requests."""
        ...


class RoundRobin:
    """Replicas in turn, regardless of load."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        index = self._next % len(replicas)
        self._next += 1
        return index


class LeastOutstanding:
    """The replica with the fewest running plus waiting requests."""

    def choose(self, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        return int(outstanding.argmin())


class LeastKVUsage:
    """The replica with the smallest share of KV blocks in use, then the fewest outstanding."""

    def choose(self, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        keys = [(r.kv_blocks_used(now) / r.kv_capacity_blocks, int(outstanding[i]))
                for i, r in enumerate(replicas)]
        return keys.index(min(keys))


ROUTERS: dict[str, type] = {
    "round-robin": RoundRobin,
    "least-outstanding": LeastOutstanding,
    "least-kv": LeastKVUsage,
}


def make_router(name: str) -> Router:
    if name not in ROUTERS:
        raise ConfigError(f"unknown router {name!r}; choose one of: {', '.join(ROUTERS)}")
    return ROUTERS[name]()
