"""`--goodput ttft:500 tpot:50` unquoted, as vllm bench serve (argparse nargs="+") takes it; the
quoted form and repeated flags keep working; plan's --slo takes several values the same way."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.commands.multi_value import MultiValueOption


@click.command()
@click.option("--goodput", cls=MultiValueOption)
@click.option("--seed", type=int, default=0)
@click.option("-v", "verbose", is_flag=True)
def _toy(goodput, seed, verbose):
    click.echo(json.dumps({"goodput": list(goodput), "seed": seed, "verbose": verbose}))


@pytest.mark.parametrize("args, goodput, seed", [
    (["--goodput", "ttft:500", "tpot:50", "--seed", "3"], ["ttft:500", "tpot:50"], 3),
    (["--goodput", "ttft:500 tpot:50"], ["ttft:500 tpot:50"], 0),
    (["--goodput", "ttft:500", "--seed", "2", "--goodput", "e2el:9", "tpot:1"], ["ttft:500", "e2el:9", "tpot:1"], 2),
    (["--goodput=ttft:500", "tpot:50", "-v"], ["ttft:500", "tpot:50"], 0),
    (["--seed", "4"], [], 4),
])
def test_values_run_to_the_next_flag(args, goodput, seed):
    result = CliRunner().invoke(_toy, args)
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed["goodput"] == goodput and parsed["seed"] == seed
    assert parsed["verbose"] == ("-v" in args)


SIM = ["simulate", "--gpu", "h100", "--model", "deepseek-r1-distill-qwen-1.5b", "--dataset", "gsm8k",
       "--num-requests", "20", "--max-tokens", "128", "--no-timeline"]


@pytest.mark.parametrize("goodput", [["ttft:500", "tpot:50"], ["ttft:500 tpot:50"],
                                     ["ttft:500", "--goodput", "tpot:50"]], ids=["unquoted", "quoted", "repeated"])
def test_simulate_takes_vllm_goodput_forms(tmp_path, goodput):
    result = CliRunner().invoke(main, [*SIM, "--goodput", *goodput, "--seed", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["goodput"]["slos_s"] == {"ttft": 0.5, "tpot": 0.05}
    assert summary["seed"] == 1  # the flag after the values was parsed as a flag


def test_compare_reads_every_unquoted_value():
    result = CliRunner().invoke(main, ["compare", "--goodput", "ttft:500", "bogus:5", "--variant", "baseline:"])
    assert result.exit_code == 2
    assert "--goodput 'bogus:5'" in result.output and len(result.output.strip().splitlines()) == 1


def test_plan_slo_takes_several_values_then_the_next_flag():
    result = CliRunner().invoke(main, ["plan", "--rate", "1", "--slo", "ttft_p99=10s", "tpot_p99=bogus",
                                       "--arrival", "gamma"])
    assert result.exit_code == 2
    assert "--slo tpot_p99: 'bogus'" in result.output and len(result.output.strip().splitlines()) == 1
