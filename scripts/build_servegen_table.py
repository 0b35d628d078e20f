"""Derive rllmsim's compact ServeGen DeepSeek-R1 table from the raw client pool.

Input: `shared/reasoning-lengths/servegen-deepseek-r1/` (alibaba/ServeGen @ f891d11, Apache-2.0):
73 clients, each a `chunk-<c>-trace.csv` (one row per 600 s window: start, rate, cv, fitted law,
two parameters) and a `chunk-<c>-dataset.json` (input/output-length and reason_ratio PMFs per
6-hour block). The raw files are 13 MB; the simulator ships only what sampling needs:

- per window: client, start, rate, CV, law (0 = silent, 1 = Gamma, 2 = Weibull) and the law's
  shape solved so the law's CV is the window's measured CV (for Gamma that is the fitted shape,
  1/cv^2, exactly; for Weibull the fitted shape's CV differs from the measured one, so we keep
  the measured CV and the Weibull family);
- per (client, 6-hour block): the quantile function of each PMF at a fixed probability grid
  (dense in the tail), which the sampler interpolates linearly.

Run: python scripts/build_servegen_table.py [SRC] [OUT_DIR]; it prints the pooled statistics of
the raw PMFs and of the compact table so the loss of compaction is visible (PROVENANCE.md keeps
them).
"""

from __future__ import annotations

import ast
import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaln

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT.parent / "shared" / "reasoning-lengths" / "servegen-deepseek-r1"
OUT = ROOT / "rllmsim" / "data" / "servegen"
# Probability grid of the stored quantiles: every 2% in the bulk, finer in the right tail, where
# reasoning outputs put much of their mean.
GRID = np.unique(np.concatenate([np.linspace(0.0, 0.9, 46), [0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.985,
                                                              0.99, 0.993, 0.996, 0.998, 0.999, 1.0]]))
LAWS = {"": 0, "Gamma": 1, "Weibull": 2}


def weibull_cv(k: float) -> float:
    """CV of a Weibull law of shape k (scale-free)."""
    g1, g2 = gammaln(1 + 1 / k), gammaln(1 + 2 / k)
    return math.sqrt(max(math.exp(g2 - 2 * g1) - 1.0, 0.0))


def weibull_shape_for_cv(cv: float) -> float:
    """The Weibull shape whose CV is `cv` (CV falls monotonically as the shape grows)."""
    return brentq(lambda k: weibull_cv(k) - cv, 0.02, 50.0)


def quantiles(pmf: dict[float, float]) -> np.ndarray:
    """Q(p) = min{x : F(x) >= p} of a PMF at GRID (Q(0) is the smallest value with mass)."""
    xs = np.array(sorted(k for k, v in pmf.items() if v > 0), dtype=np.float64)
    ps = np.array([pmf[k] for k in xs], dtype=np.float64)
    cdf = np.cumsum(ps) / ps.sum()
    idx = np.minimum(np.searchsorted(cdf, GRID - 1e-12, side="left"), len(xs) - 1)
    return xs[idx]


def pmf_mean(pmf: dict[float, float]) -> float:
    total = sum(pmf.values())
    return sum(k * v for k, v in pmf.items()) / total


def interp_mean(q: np.ndarray) -> float:
    """Mean of the linearly interpolated quantile function (what the sampler draws from)."""
    return float(np.sum(np.diff(GRID) * (q[1:] + q[:-1]) / 2))


def main(src: Path = SRC, out: Path = OUT) -> None:
    clients = sorted(int(p.name.split("-")[1]) for p in src.glob("chunk-*-trace.csv"))
    win_rows: list[tuple] = []
    block_index: dict[tuple[int, int], int] = {}
    q_in, q_out, q_ratio, raw_means = [], [], [], []
    for c in clients:
        blocks = json.loads((src / f"chunk-{c}-dataset.json").read_text())
        for start, entry in sorted(blocks.items(), key=lambda kv: int(kv[0])):
            pmfs = {k: ast.literal_eval(entry[k]) for k in ("input_tokens", "output_tokens", "reason_ratio")}
            if not all(pmfs.values()) or not all(sum(p.values()) > 0 for p in pmfs.values()):
                continue
            block_index[(c, int(start))] = len(q_in)
            q_in.append(quantiles(pmfs["input_tokens"]))
            q_out.append(quantiles(pmfs["output_tokens"]))
            q_ratio.append(quantiles(pmfs["reason_ratio"]))
            raw_means.append((pmf_mean(pmfs["output_tokens"]), pmf_mean(pmfs["reason_ratio"])))
        starts = sorted(s for (cc, s) in block_index if cc == c)
        with open(src / f"chunk-{c}-trace.csv", newline="") as fh:
            for row in csv.reader(fh):
                t, rate, cv, law = int(float(row[0])), float(row[1]), float(row[2]), row[3].strip()
                if rate <= 0 or law == "" or not starts:
                    continue
                block = block_index[(c, max([s for s in starts if s <= t] or starts[:1]))]
                shape = 1.0 / cv**2 if law == "Gamma" else weibull_shape_for_cv(cv)
                win_rows.append((c, t, rate, cv, LAWS[law], shape, block))
    win = np.array(win_rows, dtype=np.float64)
    w = win[:, 2]
    blocks = win[:, 6].astype(int)
    raw = np.array(raw_means)
    qo = np.array(q_out)
    stats = {
        "windows": int(len(win)), "clients": len(clients), "blocks": len(q_in),
        "pool_output_mean_raw": float(np.average(raw[blocks, 0], weights=w)),
        "pool_output_mean_table": float(np.average([interp_mean(qo[b]) for b in blocks], weights=w)),
        "pool_reason_ratio_mean_raw": float(np.average(raw[blocks, 1], weights=w)),
    }
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out / "servegen_deepseek_r1.npz", grid=GRID.astype(np.float64),
        win_client=win[:, 0].astype(np.int16), win_start_s=win[:, 1].astype(np.int32),
        win_rate=win[:, 2], win_cv=win[:, 3], win_law=win[:, 4].astype(np.int8), win_shape=win[:, 5],
        win_block=blocks.astype(np.int32), q_input=np.array(q_in, dtype=np.int32),
        q_output=qo.astype(np.int32), q_ratio=np.array(q_ratio, dtype=np.float32),
    )
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    shutil.copyfile(src / "LICENSE", out / "LICENSE-servegen")
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:3]))
