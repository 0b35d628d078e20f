"""Sweep specs: grid expansion, stable run keys, and one-line errors for every user mistake."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.errors import ConfigError
from rllmsim.sweep.spec import parse_spec

BASE = """
deployment:
  model: deepseek-r1-distill-qwen-7b
  gpu: [h100-sxm, a100-80gb]
  tp: [1, 2]
workload:
  rate: [1, 2, 4]
  num_requests: 20
seeds: [0, 1]
"""


def test_grid_expands_to_the_product_in_a_stable_order():
    spec = parse_spec(BASE)
    runs = spec.expand()
    assert len(runs) == 2 * 2 * 3 * 2
    assert spec.axes == ("gpu", "tp", "rate")
    assert [r["index"] for r in runs] == list(range(len(runs)))
    first, second = runs[0], runs[1]
    assert (first["deployment"]["gpu"], first["deployment"]["tp"], first["workload"]["rate"], first["seed"]) == \
        ("h100-sxm", 1, 1.0, 0)
    assert second["seed"] == 1  # seeds innermost
    assert len({r["key"] for r in runs}) == len(runs)
    # every field filled: defaults of Deployment and WorkloadSpec
    assert first["deployment"]["gpu_memory_utilization"] == 0.9
    assert first["workload"]["dataset"] == "math-500" and first["workload"]["cv"] == 2.0


def test_keys_ignore_spelling_order_and_explicit_defaults():
    keys = {r["key"] for r in parse_spec(BASE).expand()}
    respelled = """
seeds: [1, 0]
workload: {num_requests: 20, rate: [4, 2, 1.0], dataset: math-500, arrival: gamma}
deployment:
  tp: [2, 1]
  gpu: [a100, H100_SXM]
  model: deepseek-r1-distill-qwen-7b
  gpu_memory_utilization: 0.9
  router: round-robin
"""
    assert {r["key"] for r in parse_spec(respelled).expand()} == keys


def test_keys_change_with_any_input():
    a = parse_spec(BASE).expand()[0]["key"]
    b = parse_spec(BASE.replace("num_requests: 20", "num_requests: 21")).expand()[0]["key"]
    c = parse_spec(BASE + "slos: {ttft_p99: 10s}\n").expand()[0]["key"]
    assert len({a, b, c}) == 3


@pytest.mark.parametrize("text, needle", [
    ("deployment: {gpu: [h100-sxm}\n", "invalid YAML at line 1"),
    ("- just\n- a list\n", "must be a mapping"),
    ("deployment: {gpus: [h100-sxm]}\n", "unknown field 'gpus'; did you mean 'gpu'?"),
    ("deployment: {tp: [1]}\nworkload: {rte: [1]}\n", "workload: unknown field 'rte'; did you mean 'rate'?"),
    ("deploymnet: {tp: 1}\n", "unknown top-level key 'deploymnet'"),
    ("deployment: {tp: two}\n", "deployment.tp: expected int, got 'two'"),
    ("deployment: {tp: 1.5}\n", "deployment.tp: expected int"),
    ("deployment: {enable_chunked_prefill: [1]}\n", "deployment.enable_chunked_prefill: expected bool"),
    ("deployment: {tp: []}\n", "deployment.tp: an empty list"),
    ("deployment: {tp: [1, 1]}\n", "deployment.tp: repeated values"),
    ("deployment: {tp: {a: 1}}\n", "deployment.tp: expected a value or a list"),
    ("deployment: {gpu: [h100-sxm, h1000]}\n", "deployment.gpu:"),
    ("deployment: {model: [not-a-model]}\n", "deployment.model:"),
    ("deployment: {router: [random]}\n", "deployment.router: unknown router 'random'"),
    ("deployment: {router: ['kv-aware:prefix=x']}\n", "deployment.router:"),
    ("workload: {arrival: [gamma, poison]}\n", "workload: unknown arrival 'poison'"),
    ("workload: {num_requests: 0}\n", "num_requests must be >= 1"),
    ("slos: {ttft_p99: 10}\n", "not a duration with a unit"),
    ("slos: {ttft_p42: 10s}\n", "STAT one of"),
    ("seed: 1\nseeds: [1]\n", "give `seed` or `seeds`"),
])
def test_spec_mistakes_are_one_line_config_errors(text, needle):
    with pytest.raises(ConfigError) as info:
        parse_spec(text)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_cli_reports_spec_errors_in_one_line_with_exit_code_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("deployment: {gpu: [h100-sxm]}\nworkload: {rate: [1], colour: red}\n")
    result = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: sweep spec workload: unknown field 'colour'; known: " + result.output.split("known: ")[1].strip()]
    missing = CliRunner().invoke(main, ["sweep", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "cannot read it" in missing.output


def test_keys_survive_new_fields_at_their_defaults():
    """A newer Deployment/WorkloadSpec field left at its default does not invalidate old results."""
    from rllmsim.sweep.spec import run_key

    run = parse_spec(BASE).expand()[0]
    older = {**run, "deployment": {k: v for k, v in run["deployment"].items() if k != "block_size"},
             "workload": {k: v for k, v in run["workload"].items() if k != "time_scale"}}
    assert run_key(older) == run["key"]
    changed = {**run, "deployment": {**run["deployment"], "block_size": 32}}
    assert run_key(changed) != run["key"]


def test_keys_change_with_the_key_version(monkeypatch):
    """A config whose meaning changed (KEY_VERSION bumped) is not mistaken for an old result."""
    from rllmsim.sweep import spec as sweep_spec

    run = parse_spec(BASE).expand()[0]
    monkeypatch.setattr(sweep_spec, "KEY_VERSION", sweep_spec.KEY_VERSION - 1)
    assert sweep_spec.run_key(run) != run["key"]


def test_duration_sets_the_request_count_from_each_rate():
    spec = parse_spec("workload: {rate: [0.5, 4], arrival: [gamma, poisson]}\nduration_s: 600\n")
    counts = {(r["workload"]["rate"], r["workload"]["arrival"]): r["workload"]["num_requests"] for r in spec.expand()}
    assert counts == {(0.5, "gamma"): 300, (0.5, "poisson"): 300, (4.0, "gamma"): 2400, (4.0, "poisson"): 2400}
    with pytest.raises(ConfigError, match="num_requests or duration_s, not both"):
        parse_spec("workload: {rate: 1, num_requests: 10}\nduration_s: 60\n")
    with pytest.raises(ConfigError, match="only for open-loop arrivals"):
        parse_spec("workload: {arrival: [gamma, closed-loop]}\nduration_s: 60\n")
    with pytest.raises(ConfigError, match="duration_s: must be > 0"):
        parse_spec("duration_s: 0\n")


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "examples")
                                        .glob("sweep_*.yaml")), ids=lambda p: p.name)
def test_example_specs_parse(path):
    from rllmsim.sweep.spec import load_spec

    runs = load_spec(path).expand()
    assert len(runs) >= 48 and len({r["key"] for r in runs}) == len(runs)


def test_a_sweep_takes_cache_aware_routers_with_their_weights():
    runs = parse_spec("deployment: {router: [round-robin, 'kv-aware:prefix=2,kv=1,queue=1']}\n").expand()
    assert [r["deployment"]["router"] for r in runs] == ["round-robin", "kv-aware:prefix=2,kv=1,queue=1"]
