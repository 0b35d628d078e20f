"""Reports: self-contained HTML for runs, sweeps and plans, rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.errors import ConfigError
from rllmsim.report import build_report
from rllmsim.report.run_figures import MAX_GANTT, gantt_figure, kv_envelope
from rllmsim.sweep.driver import run_sweep
from rllmsim.sweep.executors import InlineExecutor
from rllmsim.sweep.spec import parse_spec

MODEL = "deepseek-r1-distill-qwen-1.5b"
SWEEP = """
deployment: {model: deepseek-r1-distill-qwen-1.5b, gpu: [l4, a100-80gb], max_model_len: 8192}
workload: {rate: [2, 8], max_tokens: 4096, num_requests: 60}
slos: {ttft_p99: 5s}
"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--virtual-time-budget=20000"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    runner = CliRunner()
    run = root / "run"
    result = runner.invoke(main, ["simulate", "--model", MODEL, "--gpu", "l4", "--replicas", "2", "--rate", "4",
                                  "--dataset", "math-500:0.5,aime-2024:0.5", "--max-tokens", "8192",
                                  "--max-model-len", "10240", "--num-requests", "120", "--report", "--out", str(run)])
    assert result.exit_code == 0, result.output
    run_sweep(parse_spec(SWEEP), root / "sweep", InlineExecutor())
    plan_args = ["plan", "--model", MODEL, "--gpus", "l4,a100-80gb", "--tp", "1", "--rate", "4", "--max-tokens",
                 "4096", "--max-model-len", "8192", "--duration", "60", "--min-requests", "40", "--max-requests",
                 "120", "--slo", "ttft_p99=5s", "--workers", "1", "--out", str(root / "plan")]
    result = runner.invoke(main, plan_args)
    assert result.exit_code == 0, result.output
    for name in ("sweep", "plan"):
        result = runner.invoke(main, ["report", str(root / name)])
        assert result.exit_code == 0 and "report written to" in result.output, result.output
    return {"run": run, "sweep": root / "sweep", "plan": root / "plan"}


EXPECTED = {
    "run": ["KV cache blocks in use per replica", "Running and waiting requests", "Latency CDFs",
            "Requests over time (Gantt)", "Why stragglers are long", "Per dataset"],
    "sweep": ["Metrics vs rate", "Cost per hour vs P99 E2EL", "TTFT p99 (ms)"],
    "plan": ["$/hour vs e2el_p99 at 4 req/s", "Highest sustainable rate", "Bisection probes"],
}


@pytest.mark.parametrize("kind", ["run", "sweep", "plan"])
def test_reports_are_self_contained(dirs, kind):
    page = (dirs[kind] / "report.html").read_text()
    assert page.isascii()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing fetched: works offline
    assert "Plotly.newPlot" in page
    figures = int(re.search(r'data-figures="(\d+)"', page).group(1))
    assert figures >= len(EXPECTED[kind])
    for title in EXPECTED[kind]:
        assert title.replace("$", "\\u0024") in page or title in page


def test_run_report_knows_replicas_capacity_and_datasets(dirs):
    page = (dirs["run"] / "report.html").read_text()
    assert "replica 0" in page and "replica 1" in page and "capacity" in page
    assert "aime-2024" in page and "math-500" in page and "straggler" in page


def test_latencies_read_in_ms_and_the_plan_table_has_its_target_columns(dirs):
    run = (dirs["run"] / "report.html").read_text()
    assert "E2EL p99 (ms)" in run and "TTFT p50 (ms)" in run and "(s)" not in run.split("Per-dataset")[1][:2000]
    sweep = (dirs["sweep"] / "report.html").read_text()
    assert "E2EL p99 (ms)" in sweep and "TTFT p99 (s)" not in sweep
    candidates = pd.read_parquet(dirs["plan"] / "candidates.parquet")
    met = candidates[candidates["meets_target"].fillna(False).astype(bool)]
    assert len(met) and met["at_target_kv_peak_pct"].between(0, 100).all() and (met["at_target_preemptions"] >= 0).all()
    assert (met["at_target_ttfvt_p99"] >= met["at_target_ttft_p99"]).all()  # the answer comes after the reasoning
    text = json.loads((dirs["plan"] / "plan.json").read_text())["text"]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#"))
    header, rows = lines[start], lines[start + 2:lines.index("", start)]
    for column in ("TTFT p99 ms", "TTFVT p99 ms", "KV peak", "preempt", "headroom"):
        assert column in header
    assert rows and not any(re.search(r"\d(ms|s)\b", row) for row in rows)  # bare ms numbers, no units mixed in


def test_report_of_anything_else_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="not a directory rllmsim writes"):
        build_report(tmp_path)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a directory" in result.output


def test_large_runs_are_thinned_but_keep_peaks_and_stragglers():
    n = 50_000
    timeline = pd.DataFrame({"start_s": range(n), "end_s": [t + 1 for t in range(n)],
                             "kv_blocks_start": [0] * n, "kv_blocks_peak": [5] * n})
    timeline.loc[31_337, "kv_blocks_peak"] = 999
    times, blocks = kv_envelope(timeline)
    assert len(times) <= 1500 and blocks.max() == 999
    requests = pd.DataFrame({
        "request_id": range(5000), "dataset": "math-500", "arrival_s": [float(i) for i in range(5000)],
        "first_scheduled_s": [i + 0.1 for i in range(5000)], "first_token_s": [i + 0.2 for i in range(5000)],
        "finish_s": [i + (500.0 if i % 100 == 0 else 10.0) for i in range(5000)], "prompt_tokens": 100,
        "output_tokens": 1000})
    requests["e2el_s"] = requests["finish_s"] - requests["arrival_s"]
    fig, note = gantt_figure(requests, 3.0)
    shown = sum(len(trace.y) for trace in fig.data if trace.name.startswith("decode"))
    assert shown == MAX_GANTT and "50 stragglers shown" in note and "sample" in note


@pytest.mark.parametrize("kind", ["run", "sweep", "plan"])
def test_reports_render_in_headless_chromium(dirs, kind, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no headless Chromium (Debian: apt-get install chromium)")
    page = dirs[kind] / "report.html"
    expected = int(re.search(r'data-figures="(\d+)"', page.read_text()).group(1))
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                             page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data-render-error=\"" not in dom, dom[dom.find("data-render-error=\""):][:300]
    assert f'data-figures-rendered="{expected}"' in dom
    assert dom.count('class="main-svg"') >= expected  # every figure drew its SVG
    for title in EXPECTED[kind]:
        assert title in dom.replace("&amp;", "&")
