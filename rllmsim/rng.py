"""One seeded generator per run, split into named, independent streams.

Every random choice in a run draws from `RngStreams(seed).stream(name)`. Each name maps to its own
child of one `numpy.random.SeedSequence`, keyed by the name's bytes rather than by the order in
which streams are asked for, so adding a new stream (say, for speculative decoding) never changes
the draws of an existing one (arrivals, lengths, routing).
"""

from __future__ import annotations

import zlib

import numpy as np


class RngStreams:
    """Named random streams derived from one seed."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}

    def stream(self, name: str) -> np.random.Generator:
        """The generator for `name`; the same object on every call within a run."""
        if name not in self._streams:
            key = zlib.crc32(name.encode("utf-8"))
            self._streams[name] = np.random.default_rng(np.random.SeedSequence([self.seed, key]))
        return self._streams[name]
