"""Production DeepSeek-R1 traffic from ServeGen's client pool (alibaba/ServeGen, Apache-2.0).

Real reasoning traffic is a pool of clients, each with its own rate, burstiness and lengths that
change over the day; one Poisson stream with one length law misses both the bursts and the
bimodal outputs. The packaged table (`rllmsim/data/servegen/`, built by
`scripts/build_servegen_table.py`) keeps, per client and 600 s window, the measured rate, the
CV of inter-arrival gaps and the fitted law's family (Gamma or Weibull), and per client and
6-hour block the quantile functions of the input-length, output-length and reason_ratio PMFs.

Arrivals: each (client, window) is a stationary renewal stream, gaps drawn from the window's law
with its mean set to 1/rate and its shape to the window's CV; `rate` scales the pool (see
`ServeGenPool.arrivals` for the stationary pool and the in-order replay of a chosen time span).
Lengths: each request draws from its client's block; without ServeGen arrivals, from the pool
mixed by request rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from scipy.special import gammaln

from rllmsim.errors import ConfigError

DATASET = "servegen-deepseek-r1"
WINDOW_S = 600.0
DAY_S = 86400.0
GAMMA, WEIBULL = 1, 2


@dataclass(frozen=True)
class ServeGenPool:
    """The packaged table's arrays (see the module docstring and the build script)."""

    grid: np.ndarray
    client: np.ndarray
    start_s: np.ndarray
    rate: np.ndarray
    cv: np.ndarray
    law: np.ndarray
    shape: np.ndarray
    block: np.ndarray
    q_input: np.ndarray
    q_output: np.ndarray
    q_ratio: np.ndarray

    def pool_rate(self) -> dict[int, float]:
        """Total request rate of all clients by window start (seconds into the day)."""
        starts, inverse = np.unique(self.start_s, return_inverse=True)
        return dict(zip(starts.tolist(), np.bincount(inverse, weights=self.rate).tolist()))

    def _gaps(self, rows: np.ndarray, scale: float, rng: np.random.Generator, biased: bool = False) -> np.ndarray:
        """One gap per row from its window's law (mean 1/(rate*scale), CV the window's); `biased`
        draws the length-biased gap instead, whose uniform fraction starts a stationary stream."""
        out = np.empty(rows.size)
        mean = 1.0 / (self.rate[rows] * scale)
        k = self.shape[rows]
        gam = self.law[rows] == GAMMA
        out[gam] = rng.gamma(k[gam] + biased, mean[gam] / k[gam])
        wb = ~gam
        if wb.any():
            kw = k[wb]
            unit = mean[wb] / np.exp(gammaln(1.0 + 1.0 / kw))
            # Weibull: (X/scale)^k is Exp(1); length-biased, it is Gamma(1 + 1/k)
            x = rng.gamma(1.0 + 1.0 / kw) ** (1.0 / kw) if biased else rng.weibull(kw)
            out[wb] = x * unit
        return out

    def intervals(self, window: int, n: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
        """n inter-arrival gaps of table row `window` at `scale` times its rate."""
        return self._gaps(np.full(n, window, dtype=np.int64), scale, rng)

    def _streams(self, rows: np.ndarray, scale: float, horizon: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Arrivals in [0, horizon) of one stationary renewal stream per row (all at once, a round
        of gaps per pass), so no stream starts with a burst at t=0."""
        t = rng.uniform(size=rows.size) * self._gaps(rows, scale, rng, biased=True)
        times, owners = [], []
        live = np.flatnonzero(t < horizon)
        while live.size:
            times.append(t[live])
            owners.append(rows[live])
            t[live] += self._gaps(rows[live], scale, rng)
            live = live[t[live] < horizon]
        if not times:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return np.concatenate(times), np.concatenate(owners)

    def arrivals(self, rate: float, n: int, rng: np.random.Generator,
                 start_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """n arrival times and the table row (client and window) each came from.

        Without `start_s`: the pool as a whole, stationary: every (client, window) of the day is
        a stream at its measured CV and law, rates scaled so they sum to `rate`, so the length
        mix is the day's. With `start_s` (seconds into the day): the day replayed in order from
        that window, wrapping round, rates scaled by rate / (the pool's rate in that window).
        """
        if start_s is None:
            scale = rate / float(self.rate.sum())
            rows = np.arange(self.rate.size)
            horizon = 1.5 * n / rate + 1.0
            while True:
                t, owner = self._streams(rows, scale, horizon, rng)
                if t.size >= n:
                    break
                horizon *= 2
        else:
            t, owner = self._replay(rate, n, rng, start_s)
        order = np.argsort(t, kind="stable")[:n]
        return t[order], owner[order]

    def _replay(self, rate: float, n: int, rng: np.random.Generator, start_s: float) -> tuple[np.ndarray, np.ndarray]:
        rates = self.pool_rate()
        start = int(start_s // WINDOW_S * WINDOW_S) % int(DAY_S)
        if rates.get(start, 0.0) <= 0:
            raise ConfigError(f"servegen start {start_s:g} s: the pool sends nothing in that window; pick another time")
        scale = rate / rates[start]
        times, rows = [], []
        got, lap = 0, 0
        while got < n:
            for t0 in sorted(rates, key=lambda s: (s - start) % DAY_S):
                t, owner = self._streams(np.flatnonzero(self.start_s == t0), scale, WINDOW_S, rng)
                times.append(t + (t0 - start) % DAY_S + lap * DAY_S)
                rows.append(owner)
                got += t.size
                if got >= n:
                    break
            lap += 1
        return np.concatenate(times), np.concatenate(rows)

    def sample(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prompt, output, reason_ratio) of one request per table row, from its block's quantiles."""
        blocks = self.block[rows]
        prompt = np.maximum(np.rint(self._draw(self.q_input, blocks, rng)), 1).astype(np.int64)
        output = np.maximum(np.rint(self._draw(self.q_output, blocks, rng)), 1).astype(np.int64)
        ratio = np.clip(self._draw(self.q_ratio, blocks, rng), 0.0, 1.0)
        return prompt, output, ratio

    def pooled_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n table rows drawn in proportion to their request rate: the pool as a whole."""
        return rng.choice(self.rate.size, size=n, p=self.rate / self.rate.sum())

    def _draw(self, q: np.ndarray, blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Inverse-CDF draws from each block's linearly interpolated quantile function."""
        u = rng.uniform(size=blocks.size)
        i = np.clip(np.searchsorted(self.grid, u, side="right") - 1, 0, self.grid.size - 2)
        frac = (u - self.grid[i]) / (self.grid[i + 1] - self.grid[i])
        lo, hi = q[blocks, i], q[blocks, i + 1]
        return lo + frac * (hi - lo)


@lru_cache(maxsize=1)
def load_pool() -> ServeGenPool:
    """The packaged ServeGen DeepSeek-R1 table."""
    with resources.files("rllmsim.data").joinpath("servegen/servegen_deepseek_r1.npz").open("rb") as fh:
        z = np.load(fh)
        return ServeGenPool(
            grid=z["grid"], client=z["win_client"].astype(np.int64), start_s=z["win_start_s"].astype(np.int64),
            rate=z["win_rate"], cv=z["win_cv"], law=z["win_law"].astype(np.int64), shape=z["win_shape"],
            block=z["win_block"].astype(np.int64), q_input=z["q_input"].astype(np.float64),
            q_output=z["q_output"].astype(np.float64), q_ratio=z["q_ratio"].astype(np.float64),
        )
