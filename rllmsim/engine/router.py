"""Routers: which replica serves an arriving request.

A registry maps names to classes, so a new policy is a new class plus one line. Every router sees
the replicas' state at the arrival instant; ties go to the lowest replica index, so routing is
deterministic and needs no random draws. The cluster keeps each replica's outstanding count
(running + waiting) in one array, so the common policies cost one `argmin` per request rather than
a Python loop over replicas.

A router is named by a spec, `NAME` or `NAME:key=value,...`: the cache-aware routers
(`kv_routing.py`) take their scorer weights there, e.g. `kv-aware:prefix=3,kv=2,queue=2` or
`dynamo-kv:overlap=1`, so one string carries a router through the CLI, the API, compare variants
and sweeps alike.
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import numpy as np

from rllmsim.engine.kv_routing import DynamoCost, WeightedScorers, kv_usage
from rllmsim.engine.replica import Replica
from rllmsim.engine.request import RequestLedger
from rllmsim.errors import ConfigError


class Router(Protocol):
    def choose(self, rid: int, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        """Index of the replica that gets request `rid`; `outstanding[i]` is replica i's
        running plus waiting requests."""
        ...


class RoundRobin:
    """Replicas in turn, regardless of load."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, rid: int, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        index = self._next % len(replicas)
        self._next += 1
        return index


class LeastOutstanding:
    """The replica with the fewest running plus waiting requests."""

    def choose(self, rid: int, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        return int(outstanding.argmin())


class LeastKVUsage:
    """The replica with the smallest share of KV blocks in use, then the fewest outstanding."""

    def choose(self, rid: int, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        keys = list(zip(kv_usage(replicas, now).tolist(), outstanding.tolist()))
        return keys.index(min(keys))


class SessionAffinity:
    """llm-d's session-affinity scorer: a request of a session the router has seen goes to the
    replica that served the session's last request (where its history's KV is cached); a new
    session, or a request without one, to the fewest outstanding. A request's session is its
    prefix group (a conversation, `workload/sessions.py`)."""

    def __init__(self, ledger: RequestLedger) -> None:
        self.ledger = ledger
        self._replica: dict[int, int] = {}

    def choose(self, rid: int, replicas: Sequence[Replica], outstanding: np.ndarray, now: float) -> int:
        session = int(self.ledger.prefix_group[rid])
        index = self._replica.get(session)
        if index is None:
            index = int(outstanding.argmin())
            if session >= 0:
                self._replica[session] = index
        return index


ROUTERS: dict[str, type] = {
    "round-robin": RoundRobin,
    "least-outstanding": LeastOutstanding,
    "least-kv": LeastKVUsage,
    "session": SessionAffinity,
    "kv-aware": WeightedScorers,
    "dynamo-kv": DynamoCost,
}


def parse_router(spec: str) -> tuple[str, dict[str, float]]:
    """`NAME[:key=value,...]` -> (name, weights with the router's defaults filled in); a
    one-line ConfigError naming the router or weight and the fix when the spec is wrong."""
    name, _, given = str(spec).partition(":")
    name = name.strip()
    if name not in ROUTERS:
        raise ConfigError(f"unknown router {name!r}; choose one of: {', '.join(ROUTERS)}")
    defaults: dict[str, float] = getattr(ROUTERS[name], "WEIGHTS", {})
    weights = dict(defaults)
    for part in filter(None, (p.strip() for p in given.split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        if not defaults:
            raise ConfigError(f"router {name!r} takes no weights; write --router {name}")
        if key not in defaults:
            raise ConfigError(f"router {name!r}: unknown weight {key!r}; it takes {', '.join(defaults)}, "
                              f"as in {_example(name, defaults)}")
        try:
            weights[key] = float(value)
        except ValueError:
            raise ConfigError(f"router {name!r}: weight {key}={value!r} is not a number; write e.g. "
                              f"{_example(name, defaults)}") from None
        if not math.isfinite(weights[key]) or weights[key] < 0:
            raise ConfigError(f"router {name!r}: weight {key}={value} must be a finite number >= 0")
    return name, weights


def _example(name: str, defaults: dict[str, float]) -> str:
    return f"{name}:" + ",".join(f"{k}={v:g}" for k, v in defaults.items())


def make_router(spec: str, ledger: RequestLedger, block_size: int, capacities: list[int]) -> Router:
    """The router `spec` names, for replicas of `capacities` KV blocks serving `ledger`'s requests."""
    name, weights = parse_router(spec)
    if name == "session":
        return SessionAffinity(ledger)
    if weights:
        return ROUTERS[name](ledger, block_size, capacities, **weights)
    return ROUTERS[name]()
