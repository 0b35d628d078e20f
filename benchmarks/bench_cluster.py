"""A day-scale reasoning workload on a 64-replica cluster; prints the simulator's cost.

1,000,000 requests, Gamma arrivals (CV 2), MATH-500 and AIME-2024 lengths mixed, 64 replicas of
DeepSeek-R1-Distill-Qwen-7B on H100, offered load ~80% of the cluster's capacity (probed first
with a saturated closed-loop run on one replica). Target: under 120 s and 4 GiB on one core.

    python benchmarks/bench_cluster.py [--requests N] [--replicas R] [--load 0.8]
"""

from __future__ import annotations

import argparse

from common import MIX, Stopwatch, peak_rss_gib, reference_deployment, replica_capacity_rps
from rllmsim.simulation import WorkloadSpec, run_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--router", default="least-outstanding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with Stopwatch() as probe:
        capacity = replica_capacity_rps()
    rate = args.load * capacity * args.replicas
    spec = WorkloadSpec(arrival="gamma", rate=rate, cv=2.0, dataset=MIX, num_requests=args.requests)
    with Stopwatch() as sim:
        run = run_simulation(reference_deployment(args.replicas), spec, seed=args.seed, router=args.router)
    s = run.summary
    replica_seconds = s["sim"]["simulated_s"] * args.replicas
    print(f"capacity probe:            {capacity:.3f} req/s per replica ({probe.seconds:.1f} s)")
    print(f"offered rate:              {rate:.2f} req/s on {args.replicas} replicas ({args.load:.0%} load)")
    print(f"requests:                  {s['requests']['arrived']} arrived, {s['requests']['completed']} completed")
    print(f"wall time (s):             {sim.seconds:.2f}  (engine loop {s['sim']['wall_s']:.2f})")
    print(f"peak RSS (GiB):            {peak_rss_gib():.2f}")
    print(f"simulated time (s):        {s['sim']['simulated_s']:.1f}")
    print(f"replica-s per wall s:      {replica_seconds / sim.seconds:.0f}")
    print(f"steps:                     {s['sim']['steps']}")
    print(f"events:                    {s['sim']['events']}")
    print(f"timeline rows:             {s['sim']['timeline_rows']}")
    print(f"KV mean / peak (%):        {s['kv']['mean_pct']:.1f} / {s['kv']['peak_pct']:.1f}")
    print(f"E2EL p50 / p99 (s):        {s['e2el_s']['p50']:.1f} / {s['e2el_s']['p99']:.1f}")


if __name__ == "__main__":
    main()
