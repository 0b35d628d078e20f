"""Log-space interpolation over measured grids, with roofline extrapolation at the edges.

Kernel times follow power laws over most of their range (a GEMM's time grows linearly with M once
compute-bound, attention's with context once bandwidth-bound), so the lookups interpolate
log(time) linearly in log(size): exact at every measured point, monotone between two of them,
and exact for power laws. Beyond the largest measured size a kernel is taken to keep the
efficiency it had at the edge, i.e. its time scales linearly with the size (the roofline at the
edge's measured efficiency); below the smallest size the smallest time stands (a latency floor).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np


def bracket(values: np.ndarray, q: float) -> tuple[int, int, float, float]:
    """Where q falls on a sorted axis: (lower index, upper index, log-weight of the upper, linear
    scale beyond the last value). Below the first value the first stands; beyond the last, the
    last scaled by q / last (the edge's efficiency kept)."""
    if q >= values[-1]:
        return len(values) - 1, len(values) - 1, 0.0, q / values[-1]
    if q <= values[0]:
        return 0, 0, 0.0, 1.0
    j = int(np.searchsorted(values, q, side="right"))
    w = (np.log(q) - np.log(values[j - 1])) / (np.log(values[j]) - np.log(values[j - 1]))
    return j - 1, j, float(w), 1.0


class Curve:
    """Time against one size axis, from measured points (sizes > 0, times > 0).

    Evaluated as y_i * (y_i+1 / y_i) ** w with w the position of the query in log(size) between
    its two neighbours, which returns a measured time bit for bit at its own size; the per-interval
    logs and ratios are computed once, because fast-forwarded runs evaluate curves millions of times.
    """

    __slots__ = ("x", "y", "_log_x", "_inv_width", "_ratio")

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)
        self._log_x = np.log(self.x)
        with np.errstate(divide="ignore"):
            self._inv_width = 1.0 / np.diff(self._log_x) if len(self.x) > 1 else np.zeros(0)
        self._ratio = self.y[1:] / self.y[:-1]

    @classmethod
    def from_points(cls, x: np.ndarray, y: np.ndarray) -> "Curve":
        """Sort, average repeated sizes, and keep positive points only."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        if len(x) == 0:
            raise ValueError("a curve needs at least one measured point")
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        unique, start = np.unique(x, return_index=True)
        means = np.add.reduceat(y, start) / np.diff(np.append(start, len(x)))
        return cls(unique, means)

    @property
    def x_max(self) -> float:
        return float(self.x[-1])

    def __call__(self, q: np.ndarray | float) -> np.ndarray:
        x, y = self.x, self.y
        q = np.maximum(np.asarray(q, dtype=np.float64), x[0])
        if len(x) == 1:
            return y[0] * (q / x[0])
        i = np.searchsorted(x[1:-1], q, side="right")  # the interval below q, 0 .. len(x) - 2
        inside = y[i] * self._ratio[i] ** ((np.log(q) - self._log_x[i]) * self._inv_width[i])
        return np.where(q >= x[-1], y[-1] * (q / x[-1]), inside)

    def scalar(self, q: float) -> float:
        """The same formula on one Python float, for steps costed one at a time (prefills)."""
        x, y = self.x, self.y
        if q >= x[-1] or len(x) == 1:
            return float(y[-1] * (max(q, x[0]) / x[-1]))
        if q <= x[0]:
            return float(y[0])
        i = bisect.bisect_right(x, q) - 1
        return float(y[i] * self._ratio[i] ** ((math.log(q) - self._log_x[i]) * self._inv_width[i]))

    def outside(self, q: np.ndarray | float) -> np.ndarray:
        """Where a query lies beyond the measured sizes (extrapolated, not interpolated)."""
        return np.asarray(q, dtype=np.float64) > self.x[-1]

class TabulatedCurve:
    """A `Curve` sampled densely in log(size) (every measured size kept, 64 samples an octave
    between) and interpolated linearly between samples, so an array of sizes costs one
    `np.interp`: fast-forwarded runs evaluate decode attention for every step they plan. Between
    samples it departs from the curve by ~1e-5 relative; at measured sizes it is the curve.

    `x_scale` re-expresses the size axis (a decode batch's per-sequence context becomes the
    batch's total KV tokens, so a run needs no division) and `y_offset` adds a constant time (the
    rest of a decode step of that batch), both folded into the samples once.
    """

    __slots__ = ("_x", "_y", "x_max", "_y_max", "_offset")

    def __init__(self, curve: Curve, per_octave: int = 64, x_scale: float = 1.0, y_offset: float = 0.0) -> None:
        lo, hi = float(np.log(curve.x[0])), float(np.log(curve.x[-1]))
        samples = np.linspace(lo, hi, max(2, int(np.ceil((hi - lo) / np.log(2) * per_octave)) + 1))
        log_x = np.union1d(samples, np.log(curve.x))
        y = curve(np.exp(log_x))
        measured = np.searchsorted(log_x, np.log(curve.x))
        y[measured] = curve.y
        x = np.exp(log_x) * x_scale
        x[measured] = curve.x * x_scale  # exact at measured sizes
        self._x, self._y = x, y + y_offset
        self.x_max, self._y_max, self._offset = float(x[-1]), float(curve.y[-1]), y_offset

    def __call__(self, q: np.ndarray, q_max: float) -> np.ndarray:
        """Times at sizes `q` (an array whose largest value is `q_max`); the smallest time below
        the grid, linear beyond it (plus the offset)."""
        out = np.interp(q, self._x, self._y)
        if q_max > self.x_max:
            out = np.where(q > self.x_max, self._y_max * (q / self.x_max) + self._offset, out)
        return out


@dataclass(frozen=True)
class Grid:
    """Time over two axes: one `Curve` per measured row value (rows may cover different extents,
    as the decode-attention grids do, measured only up to a total token count)."""

    rows: np.ndarray
    curves: tuple[Curve, ...]

    @classmethod
    def from_points(cls, row: np.ndarray, col: np.ndarray, y: np.ndarray) -> "Grid":
        row = np.asarray(row, dtype=np.float64)
        values = np.unique(row[row > 0])
        curves = tuple(Curve.from_points(np.asarray(col)[row == v], np.asarray(y)[row == v]) for v in values)
        return cls(values, curves)

    def bracket(self, r: float) -> tuple[int, int, float, float]:
        """(lower row, upper row, log-weight of the upper, scale beyond the last row) for row value r."""
        return bracket(self.rows, r)

    def at_row(self, r: float, cols: np.ndarray | float) -> np.ndarray:
        """Times at row value r for every column value in `cols`."""
        i, j, w, scale = self.bracket(r)
        low = self.curves[i](cols)
        if j == i:
            return low * scale
        high = self.curves[j](cols)
        return np.exp((1.0 - w) * np.log(low) + w * np.log(high))

    def at_row_scalar(self, r: float, col: float) -> float:
        """`at_row` for one column value, on Python floats."""
        i, j, w, scale = self.bracket(r)
        low = self.curves[i].scalar(col)
        if j == i:
            return low * scale
        return math.exp((1.0 - w) * math.log(low) + w * math.log(self.curves[j].scalar(col)))

    def outside_scalar(self, r: float, col: float) -> bool:
        i, j, _, _ = self.bracket(r)
        return r > self.rows[-1] or col > self.curves[i].x[-1] or col > self.curves[j].x[-1]

    def outside(self, r: float, cols: np.ndarray | float) -> np.ndarray:
        i, j, _, _ = self.bracket(r)
        beyond_rows = r > self.rows[-1]
        return beyond_rows | self.curves[i].outside(cols) | self.curves[j].outside(cols)


class GemmGrid:
    """GEMM times over (m, n, k) for one dtype, as a dense log-space cube built once per table.

    `curve(n, k)` gives the time against M of one projection: bilinear in (log n, log k) at each
    measured M, ignoring corners that were not measured, and scaled linearly in n and k beyond the
    measured widths (the roofline at the edge's efficiency).
    """

    def __init__(self, m: np.ndarray, n: np.ndarray, k: np.ndarray, latency: np.ndarray) -> None:
        self.ms, mi = np.unique(np.asarray(m, dtype=np.float64), return_inverse=True)
        self.ns, ni = np.unique(np.asarray(n, dtype=np.float64), return_inverse=True)
        self.ks, ki = np.unique(np.asarray(k, dtype=np.float64), return_inverse=True)
        cube = np.full((len(self.ms), len(self.ns), len(self.ks)), np.nan)
        cube[mi, ni, ki] = np.log(np.asarray(latency, dtype=np.float64))
        self.log_cube = cube

    def curve(self, n: int, k: int) -> tuple[Curve, bool]:
        """Time against M for this (n, k), and whether n or k lay beyond the measured widths."""
        n0, n1, wn, sn = bracket(self.ns, float(n))
        k0, k1, wk, sk = bracket(self.ks, float(k))
        corners = [(n0, k0, (1 - wn) * (1 - wk)), (n0, k1, (1 - wn) * wk), (n1, k0, wn * (1 - wk)), (n1, k1, wn * wk)]
        total = np.zeros(len(self.ms))
        weight = np.zeros(len(self.ms))
        for i, j, w in corners:
            values = self.log_cube[:, i, j]
            ok = np.isfinite(values)
            total[ok] += w * values[ok]
            weight[ok] += w
        measured = weight > 0
        log_time = total[measured] / weight[measured]
        outside = float(n) > self.ns[-1] or float(k) > self.ks[-1]
        return Curve.from_points(self.ms[measured], np.exp(log_time) * sn * sk), outside


class MixedGrid:
    """Attention of a step that mixes one prefill chunk with decodes, measured as one kernel call:
    a `Grid` over (context after the chunk, decode context) for every measured (chunk, decoding
    sequences), interpolated in log space between the four around a query. Mixed calls cost more
    than their parts measured apart (varlen attention does not split the decodes' KV), so where
    this was measured it replaces the sum."""

    def __init__(self, chunk: np.ndarray, context: np.ndarray, seqs: np.ndarray, decode_context: np.ndarray,
                 latency: np.ndarray) -> None:
        chunk, seqs = np.asarray(chunk, dtype=np.float64), np.asarray(seqs, dtype=np.float64)
        self.chunks = np.unique(chunk)
        self.seqs = np.unique(seqs)
        self.grids: dict[tuple[float, float], Grid] = {}
        for c in self.chunks:
            for n in self.seqs:
                hit = (chunk == c) & (seqs == n)
                if hit.any():
                    self.grids[(c, n)] = Grid.from_points(np.asarray(context)[hit], np.asarray(decode_context)[hit],
                                                          np.asarray(latency)[hit])

    def __call__(self, chunk: float, context: float, seqs: float, decode_context: float) -> tuple[float, bool]:
        """Microseconds of one mixed call, and whether it lay beyond the measured grid."""
        i0, i1, wc, sc = bracket(self.chunks, chunk)
        j0, j1, wn, sn = bracket(self.seqs, seqs)
        c0, c1, n0, n1 = self.chunks[i0], self.chunks[i1], self.seqs[j0], self.seqs[j1]
        total = weight = 0.0
        outside = sc > 1.0 or sn > 1.0
        for c, n, w in ((c0, n0, (1 - wc) * (1 - wn)), (c0, n1, (1 - wc) * wn), (c1, n0, wc * (1 - wn)),
                        (c1, n1, wc * wn)):
            grid = self.grids.get((c, n))
            if grid is None or w == 0.0:
                continue
            total += w * math.log(grid.at_row_scalar(context, decode_context))
            weight += w
            outside = outside or grid.outside_scalar(context, decode_context)
        if weight == 0.0:
            return float("nan"), True
        return math.exp(total / weight) * sc * sn, outside
