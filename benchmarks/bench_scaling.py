"""How simulation cost grows with work: wall time for 10k/100k/1M requests on 1/8/64 replicas.

Each cell offers ~80% of the replicas' capacity, so simulated time grows with requests / replicas.
Cost should grow close to linearly in requests.

    python benchmarks/bench_scaling.py [--requests 10000,100000] [--replicas 1,8,64]
"""

from __future__ import annotations

import argparse

from common import MIX, Stopwatch, reference_deployment, replica_capacity_rps
from rllmsim.simulation import WorkloadSpec, run_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", default="10000,100000,1000000")
    parser.add_argument("--replicas", default="1,8,64")
    parser.add_argument("--load", type=float, default=0.8)
    args = parser.parse_args()
    capacity = replica_capacity_rps()
    print(f"capacity probe: {capacity:.3f} req/s per replica")
    print(f"{'requests':>10} {'replicas':>8} {'wall_s':>8} {'us/req':>8} {'sim_s':>10} {'segments':>10}")
    for replicas in (int(r) for r in args.replicas.split(",")):
        for requests in (int(n) for n in args.requests.split(",")):
            spec = WorkloadSpec(arrival="gamma", rate=args.load * capacity * replicas, cv=2.0, dataset=MIX,
                                num_requests=requests)
            with Stopwatch() as clock:
                run = run_simulation(reference_deployment(replicas), spec, seed=0, router="least-outstanding")
            s = run.summary["sim"]
            print(f"{requests:>10} {replicas:>8} {clock.seconds:>8.2f} {1e6 * clock.seconds / requests:>8.1f} "
                  f"{s['simulated_s']:>10.0f} {s['timeline_rows']:>10}", flush=True)


if __name__ == "__main__":
    main()
