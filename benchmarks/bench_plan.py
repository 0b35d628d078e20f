"""The README's plan example, before and after a change to the search: wall time, probes, the answer.

    python benchmarks/bench_plan.py [--base REV] [--all] [--doubling] [--repeat N] [--workers N]

"before" is the source tree of `--base` (default 00f57f5, the last commit that searched every
candidate to the tolerance), unpacked with `git archive` into a temporary folder; "after" is this
working tree. They run back to back in one invocation, alternating `--repeat` times, each in its
own Python process with the same `--workers`; each tree's fastest run is kept, the one least
slowed by whatever else shares the machine (the seconds of every run are printed too). `--all`
adds this tree with `search="all"` (every candidate searched fully); `--doubling` adds it with
`first_bracket=False` (sizing points and probe reuse without the estimate).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "00f57f5"
EXAMPLE = dict(model="deepseek-r1-distill-qwen-32b", dataset="math-500", rate=20.0,
               gpus="h100-sxm,h200,b200,a100-80gb", tp="1,2,4,8", slo=["ttft_p99=10s", "tpot_p99=80ms"])

# run inside the tree under test: prints one JSON line
SNIPPET = """
import json, sys, time
from rllmsim.api.plan import prepare
options = json.loads(sys.argv[1])
started = time.perf_counter()
plan = prepare(**options).run()
wall = time.perf_counter() - started
best = plan.cheapest
rows = plan.result.rows
print(json.dumps({"wall_s": wall, "cheapest": f"{best['replicas']} x {best['label']}" if best else None,
                  "usd_per_hour": best["cost_per_hour_usd"] if best else None,
                  "probes": sum(len(r.get("probes", [])) for r in rows),
                  "probe_cpu_s": sum(p["wall_s"] for r in rows for p in r.get("probes", []))}))
"""


def run_tree(tree: Path, options: dict) -> dict:
    """The example planned by the rllmsim package in `tree`, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", SNIPPET, json.dumps(options)], cwd=tree, check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def unpack(rev: str, into: Path) -> Path:
    """The source tree of `rev`, as `git archive` gives it."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE, help="The revision measured as 'before'.")
    parser.add_argument("--all", dest="search_all", action="store_true", help="Also run this tree with search='all'.")
    parser.add_argument("--doubling", action="store_true", help="Also run this tree with first_bracket=False.")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of each tree, alternating; the fastest is kept.")
    parser.add_argument("--workers", type=int, default=None, help="Candidates in parallel (default: CPU count).")
    args = parser.parse_args()
    options = {**EXAMPLE, "workers": args.workers}
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {f"before ({args.base})": (unpack(args.base, Path(tmp)), options), "after": (ROOT, options)}
        if args.search_all:
            trees["after, --search all"] = (ROOT, {**options, "search": "all"})
        if args.doubling:
            trees["after, --no-first-bracket"] = (ROOT, {**options, "first_bracket": False})
        for _ in range(args.repeat):
            for name, (tree, opts) in trees.items():
                runs.setdefault(name, []).append(run_tree(tree, opts))
    results = {name: min(rs, key=lambda r: r["wall_s"]) for name, rs in runs.items()}
    print(f"{'':28s} {'wall s':>7s} {'probes':>6s} {'probe CPU s':>11s}  cheapest")
    for name, r in results.items():
        print(f"{name:28s} {r['wall_s']:7.1f} {r['probes']:6d} {r['probe_cpu_s']:11.1f}  "
              f"{r['cheapest']} (${r['usd_per_hour']:.2f}/hour)  runs: "
              + ", ".join(f"{x['wall_s']:.1f} s" for x in runs[name]))
    before, after = results[f"before ({args.base})"], results["after"]
    print(f"before / after: wall {before['wall_s'] / after['wall_s']:.2f}x, probes "
          f"{before['probes'] / after['probes']:.2f}x, probe CPU {before['probe_cpu_s'] / after['probe_cpu_s']:.2f}x; "
          f"same cheapest: {before['cheapest'] == after['cheapest']}")


if __name__ == "__main__":
    main()
