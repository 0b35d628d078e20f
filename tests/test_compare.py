"""`rllmsim compare`: variants parsed through simulate's own flags, one table with deltas, files."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.compare import delta_frame, format_table, parse_variants, variant_from_flags
from rllmsim.compare.figures import binned_mean
from rllmsim.compare.table import METRICS
from rllmsim.compare.variants import _deployment_command, _workload_flags, split_spec
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.specs import load_gpu, load_model

TINY = ["--model", "deepseek-r1-distill-qwen-1.5b", "--gpu", "h100-sxm", "--dataset", "gsm8k",
        "--arrival", "poisson", "--rate", "8", "--num-requests", "24", "--max-tokens", "256"]


def _compare(tmp_path, *variants: str, extra: tuple[str, ...] = ()):
    args = ["compare", *TINY, *extra, "--seed", "3", "--out", str(tmp_path / "cmp")]
    for v in variants:
        args += ["--variant", v]
    return CliRunner().invoke(main, args)


def test_compare_end_to_end_prints_one_table_and_writes_files(tmp_path):
    result = _compare(tmp_path, "baseline:", "fp8kv:--kv-cache-dtype=fp8", "seqs:--max-num-seqs=4")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("Output token throughput (tok/s)") == 1          # one table, not one per variant
    header = next(line for line in out.splitlines() if line.startswith("Metric"))
    assert header.split() == ["Metric", "baseline", "fp8kv", "seqs"]
    # how far to trust it: the three variants share one nearest validated case, so one line names them all
    trust = out.split("fidelity:\n", 1)[1].splitlines()
    assert trust[0].startswith("  baseline, fp8kv, seqs: kernels cost model; nearest validated case: llama-3.1-8b")
    cmp_dir = tmp_path / "cmp"
    assert sorted(p.name for p in cmp_dir.iterdir()) == ["compare.csv", "compare.html", "compare.json"]
    assert not list(tmp_path.glob(".cmp.*"))                           # no staging left behind
    page = (cmp_dir / "compare.html").read_text()
    assert "Plotly.newPlot" in page and 'src="http' not in page and len(page) > 1_000_000  # plotly.js inlined
    data = json.loads((cmp_dir / "compare.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["baseline", "fp8kv", "seqs"]
    assert data["variants"][1]["overrides"] == {"kv_cache_dtype": "fp8"}
    assert data["variants"][2]["deployment"]["max_num_seqs"] == 4
    # every variant ran the identical workload
    arrived = {v["name"]: v["summary"]["tokens"]["input"] for v in data["variants"]}
    assert len(set(arrived.values())) == 1
    rows = list(csv.DictReader((cmp_dir / "compare.csv").open()))
    assert {r["variant"] for r in rows} == {"baseline", "fp8kv", "seqs"}


def test_compare_deltas_match_a_hand_computation(tmp_path):
    result = _compare(tmp_path, "baseline:", "fp8kv:--kv-cache-dtype=fp8")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    metrics = {m["metric"]: m for m in data["metrics"]}

    # KV capacity by hand: FP8 halves the bytes per token, so the same memory holds twice the blocks.
    base = Deployment(model=load_model("deepseek-r1-distill-qwen-1.5b"), gpu=load_gpu("h100-sxm"))
    fp8 = dataclasses.replace(base, kv_cache_dtype="fp8")
    assert fp8.kv_bytes_per_token_per_gpu == base.kv_bytes_per_token_per_gpu / 2
    cap = metrics["kv.capacity_blocks"]
    assert cap["values"] == {"baseline": base.num_gpu_blocks, "fp8kv": fp8.num_gpu_blocks}
    expected_pct = 100.0 * (fp8.num_gpu_blocks - base.num_gpu_blocks) / base.num_gpu_blocks
    assert cap["delta"]["fp8kv"] == fp8.num_gpu_blocks - base.num_gpu_blocks
    assert cap["delta_pct"]["fp8kv"] == pytest.approx(expected_pct)
    assert abs(expected_pct - 100.0) < 0.05

    # Output throughput by hand, from two independent simulate runs of the same workload and seed.
    workload = WorkloadSpec(arrival="poisson", rate=8, cv=None, dataset="gsm8k", num_requests=24, max_tokens=256)
    tput = [run_simulation(d, workload, seed=3).summary["throughput"]["output_tokens_per_s"] for d in (base, fp8)]
    got = metrics["throughput.output_tokens_per_s"]
    assert got["values"]["baseline"] == pytest.approx(tput[0], rel=1e-12)
    assert got["values"]["fp8kv"] == pytest.approx(tput[1], rel=1e-12)
    assert got["delta"]["fp8kv"] == pytest.approx(tput[1] - tput[0], rel=1e-9)
    assert got["delta_pct"]["fp8kv"] == pytest.approx(100 * (tput[1] - tput[0]) / tput[0], rel=1e-9)
    row = next(line for line in result.stdout.splitlines() if line.startswith("Output token throughput"))
    assert f"({100 * (tput[1] - tput[0]) / tput[0]:+.1f}%)" in row
    cap_row = next(line for line in result.stdout.splitlines() if line.startswith("KV capacity"))
    assert f"({expected_pct:+.1f}%)" in cap_row


def test_variant_flags_override_only_what_they_name(tmp_path):
    shared = {"model": "deepseek-r1-distill-qwen-1.5b", "gpu": "h100-sxm", "gpu_memory_utilization": 0.8,
              "max_num_seqs": 32}
    variant = variant_from_flags("v", ["--tensor-parallel-size=2", "--max-num-seqs", "8"], shared)
    assert variant.overrides == {"tp": 2, "max_num_seqs": 8}
    assert variant.deployment.tp == 2 and variant.deployment.max_num_seqs == 8
    assert variant.deployment.gpu_memory_utilization == 0.8        # shared value kept
    base = variant_from_flags("b", [], shared)
    assert base.overrides == {} and base.deployment.max_num_seqs == 32


def test_every_simulate_deployment_flag_works_in_a_variant():
    """Variants parse with simulate's own deployment options: every simulate option that sets a
    Deployment field (or the model, GPU or router) is a variant option, so a new one works too."""
    from rllmsim.commands.simulate import command as simulate

    deployment_names = {f.name for f in dataclasses.fields(Deployment)} | {"model", "gpu", "router"}
    wanted = {p.name for p in simulate.params if p.name in deployment_names}
    accepted = {p.name for p in _deployment_command().params}
    assert wanted <= accepted
    assert {"kv_cache_dtype", "quantization", "enable_prefix_caching"} <= accepted
    assert not accepted & {p.name for p in simulate.params if any(o in _workload_flags() for o in p.opts)}


@pytest.mark.parametrize("text, name, tokens", [
    ("baseline:", "baseline", ()),
    ("spec:--speculative-method=ngram,--num-speculative-tokens=4", "spec",
     ("--speculative-method=ngram", "--num-speculative-tokens=4")),
    ("s2:--max-num-seqs 8 --tp 2", "s2", ("--max-num-seqs", "8", "--tp", "2")),
    ("mix:--x=a:0.5,b:0.5,--y=1", "mix", ("--x=a:0.5,b:0.5", "--y=1")),
])
def test_split_spec(text, name, tokens):
    assert split_spec(text) == (name, tokens)


@pytest.mark.parametrize("variants, message", [
    (["baseline:", "bad:--no-such-flag"], ("--variant bad: No such option", "--no-such-flag")),
    (["baseline:", "fp8kv"], "write NAME:FLAGS"),
    (["baseline:", "fast:--rate=3"], "--rate is a workload option"),
    (["baseline:", "baseline:--tp=2"], "the name is used twice"),
    (["baseline:", "t:--tp=abc"], "--variant t:"),
    (["baseline:", "t:--tp=3"], "--variant t: tp must be a power of two"),
    (["baseline:", "t:--quantization=nf4"], "--variant t: unknown quantization"),
    (["baseline:", "bad name:"], "variant name 'bad name'"),
    (["baseline:", "h:--help"], ("--variant h: No such option", "--help")),
    ([], "give at least one --variant"),
])
def test_variant_errors_are_one_line_exit_2(tmp_path, variants, message):
    result = _compare(tmp_path, *variants)
    assert result.exit_code == 2, result.output
    for part in (message,) if isinstance(message, str) else message:
        assert part in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "cmp").exists()


def test_existing_out_dir_is_refused(tmp_path):
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "keep.txt").write_text("x")
    result = _compare(tmp_path, "baseline:")
    assert result.exit_code == 2 and "already exists" in result.stderr


def test_parse_variants_keeps_order_and_needs_one():
    shared = {"model": "deepseek-r1-distill-qwen-1.5b"}
    names = [v.name for v in parse_variants(["b:", "a:--kv-cache-dtype=fp8"], shared)]
    assert names == ["b", "a"]
    with pytest.raises(ConfigError):
        parse_variants([], shared)


def test_delta_frame_zero_baseline_and_missing_metric():
    summaries = {"base": {"preemptions": 0, "duration_s": 10.0}, "v": {"preemptions": 5, "duration_s": 8.0}}
    frame = delta_frame(summaries)
    pre = frame[(frame.metric == "preemptions") & (frame.variant == "v")].iloc[0]
    assert pre["delta"] == 5 and pd.isna(pre["delta_pct"])
    dur = frame[(frame.metric == "duration_s") & (frame.variant == "v")].iloc[0]
    assert dur["delta"] == -2.0 and dur["delta_pct"] == pytest.approx(-20.0)
    assert "prefix_cache.hit_rate" not in set(frame.metric)            # optional and absent everywhere
    text = format_table(frame, METRICS)
    assert "5 (+5)" in text and "8.00 (-20.0%)" in text


def test_binned_mean_integrates_rows_exactly():
    # replica 0 holds 10 blocks over [0, 2) and 30 over [3, 4); replica 1 holds 20 over [1, 3)
    timeline = pd.DataFrame({
        "replica": [0, 0, 1], "start_s": [0.0, 3.0, 1.0], "end_s": [2.0, 4.0, 3.0],
        "kv_block_seconds": [20.0, 30.0, 40.0], "running": [1, 3, 2], "waiting": [0, 0, 0],
    })
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert binned_mean(timeline, "kv_blocks", edges) == pytest.approx([10.0, 30.0, 20.0, 30.0])
    assert binned_mean(timeline, "running", edges) == pytest.approx([1.0, 3.0, 2.0, 3.0])
    assert binned_mean(timeline, "kv_blocks", np.array([0.0, 4.0])) == pytest.approx([90.0 / 4])


def test_kv_timeline_on_the_page_averages_to_the_summary_mean():
    """The page's binned KV curve, averaged over the run, is the summary's time-weighted mean."""
    dep = Deployment(model=load_model("deepseek-r1-distill-qwen-1.5b"), gpu=load_gpu("h100-sxm"), replicas=2,
                     num_gpu_blocks_override=2000, max_model_len=8192)
    run = run_simulation(dep, WorkloadSpec(dataset="math-500", rate=4, num_requests=40), seed=2)
    edges = np.linspace(0.0, run.result.simulated_s, 301)
    curve = 100 * binned_mean(run.result.timeline, "kv_blocks", edges) / (2000 * 2)
    assert curve.mean() == pytest.approx(run.summary["kv"]["mean_pct"], rel=1e-9)
