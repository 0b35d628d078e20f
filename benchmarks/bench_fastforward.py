"""Fast-forward vs step-by-step on the same 5,000-request AIME workload, one replica.

Prints both wall times, their ratio, and the largest relative difference of any request's TTFT and
E2EL between the two modes. Targets: ratio >= 20, difference <= 1e-9.

    python benchmarks/bench_fastforward.py [--requests N] [--load 0.8 | --rate R]

The offered rate defaults to 80% of one replica's AIME capacity (probed with a saturated
closed-loop run), the operating point a deployment is sized for; past saturation KV pressure
preempts every few steps and runs shorten.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import Stopwatch, reference_deployment, replica_capacity_rps
from rllmsim.simulation import WorkloadSpec, run_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--load", type=float, default=0.8, help="share of the replica's AIME capacity")
    parser.add_argument("--rate", type=float, default=None, help="req/s (overrides --load)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rate = args.rate if args.rate is not None else args.load * replica_capacity_rps("aime-2024")
    spec = WorkloadSpec(arrival="gamma", rate=rate, cv=2.0, dataset="aime-2024", num_requests=args.requests)
    deployment = reference_deployment(1)
    with Stopwatch() as fast_clock:
        fast = run_simulation(deployment, spec, seed=args.seed, fast_forward=True)
    with Stopwatch() as slow_clock:
        slow = run_simulation(deployment, spec, seed=args.seed, fast_forward=False)
    worst = 0.0
    for column in ("ttft_s", "e2el_s"):
        a, b = fast.requests[column].to_numpy(), slow.requests[column].to_numpy()
        worst = max(worst, float(np.nanmax(np.abs(a - b) / np.abs(b))))
    print(f"requests:                   {args.requests} (AIME-2024, gamma {rate:.3f} req/s, CV 2)")
    print(f"engine steps:               {fast.summary['sim']['steps']} (fast) / {slow.summary['sim']['steps']} (step)")
    print(f"fast-forward wall (s):      {fast_clock.seconds:.2f}  ({fast.summary['sim']['timeline_rows']} segments)")
    print(f"step-by-step wall (s):      {slow_clock.seconds:.2f}")
    print(f"speed-up:                   {slow_clock.seconds / fast_clock.seconds:.1f}x")
    print(f"max rel. diff TTFT/E2EL:    {worst:.3g}")


if __name__ == "__main__":
    main()
