"""The Python API end to end from strings: the same runs and files as the CLI, one-line errors."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import rllmsim
from rllmsim.api.simulate import prepare
from rllmsim.cli import main
from rllmsim.errors import ConfigError
from rllmsim.rundir import to_jsonable
from rllmsim.specs import load_gpu, load_model

ROOT = Path(__file__).resolve().parents[1]
VALIDATE = ROOT / "tests" / "data" / "validate"
SMALL = dict(model="deepseek-r1-distill-qwen-7b", gpu="h100-sxm", rate=2, dataset="aime-2024", num_requests=30,
             seed=5)
SMALL_FLAGS = ["--model", "deepseek-r1-distill-qwen-7b", "--gpu", "h100-sxm", "--rate", "2", "--dataset",
               "aime-2024", "--num-requests", "30", "--seed", "5"]


def _comparable(summary: dict) -> dict:
    """summary.json's content without the wall-clock time the simulation took."""
    out = json.loads(json.dumps(to_jsonable(summary)))
    out["sim"].pop("wall_s")
    return out


@pytest.fixture(scope="module")
def run() -> rllmsim.Run:
    return rllmsim.simulate(**SMALL, goodput={"ttft": 500, "tpot": 50})


def test_docs_example_is_three_lines_and_runs() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) == 3
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    shown = namespace["run"]
    assert isinstance(shown, rllmsim.Run) and shown.summary["requests"]["completed"] == 300
    assert "Mean TTFT (ms)" in shown._repr_html_()


def test_run_agrees_with_the_cli_on_the_same_arguments(run, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["simulate", *SMALL_FLAGS, "--goodput", "ttft:500 tpot:50", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _comparable(json.loads((out / "summary.json").read_text())) == _comparable(run.summary)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "requests.parquet"), run.requests)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "timeline.parquet"), run.timeline)
    assert run.summary["goodput"]["requests_per_s"] >= 0 and len(run.requests) == 30


def test_goodput_string_and_spec_objects_give_the_same_run(run) -> None:
    other = rllmsim.simulate(**{**SMALL, "model": load_model(SMALL["model"]), "gpu": load_gpu(SMALL["gpu"])},
                             goodput="ttft:500 tpot:50")
    assert _comparable(other.summary) == _comparable(run.summary)
    changed = rllmsim.simulate(**{**SMALL, "seed": 6}, goodput="ttft:500 tpot:50")
    assert _comparable(changed.summary) != _comparable(run.summary)


def test_aliases_take_vllm_names(run) -> None:
    aliased = rllmsim.simulate(model=SMALL["model"], gpu=SMALL["gpu"], request_rate=2, dataset="aime-2024",
                               num_prompts=30, seed=5, tensor_parallel_size=1, goodput="ttft:500 tpot:50")
    assert _comparable(aliased.summary) == _comparable(run.summary)


def test_save_writes_the_run_directory_report_accepts(run, tmp_path: Path) -> None:
    saved = run.save(tmp_path / "run")
    assert sorted(p.name for p in saved.iterdir()) == ["bench.json", "requests.parquet", "summary.json",
                                                       "timeline.parquet"]
    assert _comparable(json.loads((saved / "summary.json").read_text())) == _comparable(run.summary)
    result = CliRunner().invoke(main, ["report", str(saved)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (saved / "report.html").stat().st_size > 0
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        run.save(saved)
    lean = run.save(tmp_path / "lean", timeline=False, report=True)
    assert sorted(p.name for p in lean.iterdir()) == ["bench.json", "report.html", "requests.parquet", "summary.json"]


def test_report_writes_html(run, tmp_path: Path) -> None:
    path = run.report(tmp_path / "page.html")
    text = path.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and "plotly" in text.lower()


def test_display_shows_the_headline_metrics_in_ms(run) -> None:
    html = run._repr_html_()
    for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2el_s", "E2EL")):
        assert f"Mean {name} (ms)" in html
        assert f"{1e3 * run.summary[key]['mean']:,.2f}" in html
    assert "Request goodput (req/s)" in html and "<table>" in html
    assert "fidelity: kernels cost model; nearest validated case" in html  # how far to trust it, as the console says
    assert ("warning: not a steady state" in html) == (not run.summary["load"]["kept_up"])
    text = repr(run)
    assert text.startswith("<Run deepseek-r1-distill-qwen-7b on 1 x h100-sxm tp1: 30 requests") and "\n" not in text


@pytest.mark.parametrize("keywords, message", [
    (dict(max_num_seq=8), "simulate(): unknown keyword 'max_num_seq'; did you mean 'max_num_seqs'?"),
    (dict(model="no-such-model"), "unknown model 'no-such-model'"),
    (dict(gpu="h1000"), "unknown GPU 'h1000'"),
    (dict(tp=1.5), "tp must be an integer, got 1.5"),
    (dict(speculative_method="magic"), "speculative_method='magic'"),
    (dict(goodput={"ttfb": 5}), "metric must be ttft, tpot or e2el"),
    (dict(deployment=None, workload=None, cost_model="nope"), "cost_model 'nope'"),
])
def test_mistakes_are_one_line_config_errors(keywords: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        rllmsim.simulate(num_requests=5, **keywords)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_ready_deployment_refuses_deployment_options() -> None:
    ready = prepare(num_requests=5).deployment
    with pytest.raises(ConfigError, match="deployment= is a ready deployment; drop tp"):
        rllmsim.simulate(deployment=ready, tp=2, num_requests=5)
    assert rllmsim.simulate(deployment=ready, num_requests=5).summary["requests"]["completed"] == 5


def test_import_stays_cheap() -> None:
    code = "import sys, rllmsim; rllmsim.__version__; print(sorted({'pandas', 'numpy', 'click'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_compare_from_a_dict_and_from_cli_strings_agree(tmp_path: Path) -> None:
    shared = dict(num_requests=20, dataset="math-500", seed=1)
    from_dict = rllmsim.compare({"baseline": {}, "fp8kv": {"kv_cache_dtype": "fp8"}}, **shared)
    importlib.import_module("rllmsim.compare.run")  # the subpackage loaded: rllmsim.compare is still callable
    from_text = rllmsim.compare(["baseline:", "fp8kv:--kv-cache-dtype=fp8"], **shared)
    pd.testing.assert_frame_equal(from_dict.table, from_text.table)
    assert list(from_dict.wide().columns) == ["baseline", "fp8kv"]
    assert "fp8kv Δ%" in from_dict._repr_html_() and "baseline" in repr(from_dict)
    saved = from_dict.save(tmp_path / "cmp")
    assert {p.name for p in saved.iterdir()} == {"compare.json", "compare.csv", "compare.html"}
    with pytest.raises(ConfigError, match="variant 'fast' sets 'rate', a workload option"):
        rllmsim.compare({"fast": {"rate": 3}}, num_requests=5)


def test_plan_on_one_candidate(tmp_path: Path) -> None:
    plan = rllmsim.plan(slo="ttft_p99=10s", rate=2, gpus="h100-sxm", tp=1, num_requests=20, max_probes=3, workers=1)
    assert list(plan.candidates["label"]) == ["h100-sxm tp1"] and not plan.probes.empty
    assert "Deployments that serve 2 req/s" in plan.text and "h100-sxm tp1" in plan._repr_html_()
    assert (plan.save(tmp_path / "plan") / "plan.json").exists()
    with pytest.raises(ConfigError, match="unknown keyword 'gpu'; did you mean 'gpus'"):
        rllmsim.plan(slo="ttft_p99=10s", gpu="h100-sxm")


def test_validate_gives_what_the_cli_prints(tmp_path: Path) -> None:
    found = rllmsim.validate(VALIDATE / "bench_small.json")
    assert not found.errors.empty and {"errors", "requests"} <= set(found.tables)
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["validate", str(VALIDATE / "bench_small.json"), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output == f"{found.text}\nvalidation written to {out}\n"
    saved = found.save(tmp_path / "api")
    assert sorted(p.name for p in saved.iterdir()) == sorted(p.name for p in out.iterdir())
    assert "<table" in found._repr_html_()
    with pytest.raises(ConfigError, match="recorded run not found"):
        rllmsim.validate(tmp_path / "missing")
