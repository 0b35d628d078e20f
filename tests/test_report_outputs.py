"""Reports of every directory kind, plotly.js modes, ms units, straggler attribution, compare cost rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.compare import format_table, run_comparison, variant_from_flags, write_comparison
from rllmsim.compare.table import METRICS, delta_frame, priced
from rllmsim.engine.request import per_request_tpot
from rllmsim.errors import ConfigError
from rllmsim.report import build_report, directory_kind, write_report
from rllmsim.report.html import PLOTLYJS_FILE, Section, render_page
from rllmsim.report.stragglers import attribute, straggler_section
from rllmsim.simulation import WorkloadSpec
from rllmsim.specs import load_gpu
from rllmsim.sweep.plan_output import format_ms

SHARED = {"model": "deepseek-r1-distill-qwen-1.5b", "gpu": "l4", "replicas": 2}
WORKLOAD = WorkloadSpec(dataset="gsm8k", arrival="poisson", rate=8.0, num_requests=24, max_tokens=256)


def test_per_request_tpot_by_hand():
    tpot = per_request_tpot(np.array([0.1, 0.2, 0.3]), np.array([1.1, 0.2, np.nan]), np.array([11, 1, 5]))
    assert tpot[0] == pytest.approx(0.1) and np.isnan(tpot[1]) and np.isnan(tpot[2])


def test_requests_table_has_tpot_matching_the_summary(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["simulate", "--model", SHARED["model"], "--gpu", "l4", "--dataset", "gsm8k",
                                       "--rate", "8", "--num-requests", "24", "--max-tokens", "256", "--out", str(out)])
    assert result.exit_code == 0, result.output
    requests = pd.read_parquet(out / "requests.parquet")
    summary = json.loads((out / "summary.json").read_text())
    multi = requests["output_tokens"] > 1
    expected = (requests["e2el_s"] - requests["ttft_s"]) / (requests["output_tokens"] - 1)
    np.testing.assert_allclose(requests.loc[multi, "tpot_s"], expected[multi])
    assert requests.loc[multi, "tpot_s"].mean() == pytest.approx(summary["tpot_s"]["mean"])
    assert directory_kind(out) == "run"


def _requests(rows: list[tuple[float, float, int, int]]) -> pd.DataFrame:
    """(TTFT, decode seconds, output tokens, preemptions) per request, arriving 1 s apart."""
    frame = pd.DataFrame(rows, columns=["ttft_s", "decode_s", "output_tokens", "preemptions"])
    frame["request_id"] = range(len(frame))
    frame["dataset"] = "d"
    frame["arrival_s"] = frame["request_id"].astype(float)
    frame["first_token_s"] = frame["arrival_s"] + frame["ttft_s"]
    frame["finish_s"] = frame["first_token_s"] + frame["decode_s"]
    frame["e2el_s"] = frame["finish_s"] - frame["arrival_s"]
    return frame.drop(columns="decode_s")


def test_stragglers_are_attributed_to_length_waiting_or_slow_decode():
    typical = [(0.1, 1.0, 101, 0)] * 10               # TPOT 10 ms, E2EL 1.1 s
    requests = _requests(typical + [(0.1, 10.0, 1001, 0),   # 900 extra tokens at 10 ms: long output
                                    (10.0, 1.0, 101, 0),    # 9.9 s more waiting
                                    (0.1, 10.0, 101, 3)])   # same length, 9 s slower: preempted
    table = attribute(requests, 3.0).set_index("request_id")
    assert table["cause"].to_dict() == {10: "long output", 11: "waiting", 12: "slow decode"}
    assert table.loc[10, "long_output"] == pytest.approx(9.0) and table.loc[10, "slow_decode"] == pytest.approx(0.0)
    assert table.loc[11, "waiting"] == pytest.approx(9.9) and table.loc[11, "long_output"] == pytest.approx(0.0)
    assert table.loc[12, "slow_decode"] == pytest.approx(9.0) and table.loc[12, "preemptions"] == 3
    parts = table[["long_output", "waiting", "slow_decode"]].sum(axis=1)
    np.testing.assert_allclose(parts, table["e2el_s"] - table["typical_e2el_s"])  # the parts add up
    page = straggler_section(requests, 3.0).html
    assert "<td>10,100</td>" in page and "<td>1,100</td>" not in page  # E2EL of request 10 in ms; typical 1100
    assert "No stragglers" in straggler_section(_requests(typical), 3.0).html


def test_compare_table_prices_each_variant_and_shows_latencies_in_ms():
    summary = {"throughput": {"output_tokens_per_s": 1000.0}, "e2el_s": {"mean": 2.5, "p50": 2.0, "p99": 4.0}}
    table = delta_frame({"a": priced(summary, 3.6), "b": priced(summary, 7.2)}, METRICS)
    cost = table[table["metric"] == "cost.usd_per_million_output_tokens"].set_index("variant")["value"]
    assert cost.to_dict() == pytest.approx({"a": 1.0, "b": 2.0})  # 3.6 $/h over 3.6 M tokens/h
    text = format_table(table, METRICS)
    assert "Mean E2EL (ms)" in text and "2,500" in text and "Cost ($/hour)" in text
    assert "cost" not in priced(summary, None)  # a GPU without a price gets no cost rows


@pytest.fixture(scope="module")
def compare_dirs(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("cmp")
    variants = [variant_from_flags("baseline", [], SHARED), variant_from_flags("tp2", ["--tp=2"], SHARED)]
    comparison = run_comparison(variants, WORKLOAD, seed=1)
    write_comparison(comparison, root / "saved", html=False, save_runs=True)
    write_comparison(comparison, root / "bare", html=False)
    return {"comparison": comparison, "saved": root / "saved", "bare": root / "bare"}


def test_saved_variant_runs_are_run_directories_as_simulate_writes_them(compare_dirs):
    import json
    saved = compare_dirs["saved"] / "runs" / "tp2"
    assert {p.name for p in saved.iterdir()} == {"requests.parquet", "timeline.parquet", "summary.json", "bench.json"}
    bench = json.loads((saved / "bench.json").read_text())
    summary = json.loads((saved / "summary.json").read_text())
    assert bench["completed"] == summary["requests"]["completed"]
    assert bench["mean_ttft_ms"] == pytest.approx(1e3 * summary["ttft_s"]["mean"])


def test_compare_cost_is_replicas_times_tp_times_the_price(compare_dirs):
    comparison = compare_dirs["comparison"]
    price = load_gpu("l4").price_per_gpu_hour_usd
    assert comparison.value("baseline", "cost.usd_per_hour") == pytest.approx(2 * 1 * price)
    assert comparison.value("tp2", "cost.usd_per_hour") == pytest.approx(2 * 2 * price)
    assert "Cost ($/hour)" in comparison.format()


def test_a_compare_directory_gets_a_report(compare_dirs):
    assert directory_kind(compare_dirs["saved"]) == "compare"
    page = build_report(compare_dirs["saved"])
    assert "Plotly.newPlot" in page and "Cost ($/hour)" in page and "P99 E2EL (ms)" in page
    bare = build_report(compare_dirs["bare"])
    assert "Plotly.newPlot" not in bare and "--save-runs" in bare and "Cost ($/hour)" in bare
    result = CliRunner().invoke(main, ["report", str(compare_dirs["bare"])])
    assert result.exit_code == 0 and (compare_dirs["bare"] / "report.html").exists(), result.output


def test_a_validate_directory_keeps_its_own_report(tmp_path):
    (tmp_path / "validation.json").write_text("{}")
    with pytest.raises(ConfigError, match="rerun `rllmsim validate RUN --out DIR`"):
        write_report(tmp_path)  # no report.html: validate must write it
    (tmp_path / "report.html").write_text("<html>from validate</html>")
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 0 and "already there" in result.output, result.output
    assert (tmp_path / "report.html").read_text() == "<html>from validate</html>"


def test_an_unknown_directory_names_every_kind(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    for marker in ("summary.json", "results.parquet", "plan.json", "compare.json", "validation.json"):
        assert marker in result.output


def test_plotlyjs_modes(tmp_path):
    sections = [Section("s", html="<p>x</p>")]
    inline = render_page("t", "s", sections)
    cdn = render_page("t", "s", sections, "cdn")
    shared = render_page("t", "s", sections, "directory")
    assert len(inline) > 1_000_000 and '<script type="text/javascript" charset="utf-8" src=' not in inline
    assert len(cdn) < 10_000 and 'src="https://cdn.plot.ly/plotly-' in cdn
    assert len(shared) < 10_000 and f'src="{PLOTLYJS_FILE}"' in shared
    with pytest.raises(ConfigError, match="--plotlyjs 'x'"):
        render_page("t", "s", sections, "x")


def test_reports_in_one_folder_share_one_plotlyjs(compare_dirs):
    runs = compare_dirs["saved"] / "runs"
    for name in ("baseline", "tp2"):
        result = CliRunner().invoke(main, ["report", str(runs / name), "--plotlyjs", "directory",
                                           "--out", str(runs / f"{name}.html")])
        assert result.exit_code == 0, result.output
    script = runs / PLOTLYJS_FILE
    assert script.stat().st_size > 1_000_000 and sorted(p.name for p in runs.glob("*.js")) == [PLOTLYJS_FILE]
    assert f'src="{PLOTLYJS_FILE}"' in (runs / "tp2.html").read_text()
    result = CliRunner().invoke(main, ["report", str(runs / "tp2"), "--plotlyjs", "bogus"])
    assert result.exit_code == 2 and "--plotlyjs" in result.output


@pytest.mark.parametrize("seconds, text", [(0.02351, "23.5"), (53.61, "53,610"), (None, "-"), (float("nan"), "-")])
def test_plan_latencies_print_in_ms(seconds, text):
    assert format_ms(seconds) == text


@pytest.mark.parametrize("content", ['{"variants": 3}', '{"variants": [{"name": "a"}]}', "[1]", "{"])
def test_a_damaged_compare_json_is_one_line(tmp_path, content):
    (tmp_path / "compare.json").write_text(content)
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "compare.json" in result.output
