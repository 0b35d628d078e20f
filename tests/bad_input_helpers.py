"""Shared checks of the bad-input corpus (tests/test_bad_inputs*.py): a bad input ends in exit 2,
one line on stderr naming the field or file, no traceback, and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from rllmsim.cli import main

#: simulate on a tiny workload: any error must come before the simulation
SIMULATE = ["simulate", "--gpu", "h100", "--dataset", "gsm8k", "--rate", "4", "--num-requests", "5",
            "--max-tokens", "64"]
PLAN = ["plan", "--model", "deepseek-r1-distill-qwen-1.5b", "--gpus", "h100", "--tp", "1", "--rate", "1",
        "--slo", "ttft_p99=10s", "--max-tokens", "64", "--workers", "1"]
COMPARE = ["compare", "--gpu", "h100", "--dataset", "gsm8k", "--rate", "4", "--num-requests", "5",
           "--max-tokens", "64", "--variant", "baseline:", "--variant", "fp8kv:--kv-cache-dtype=fp8", "--no-html"]


def tree(root: Path) -> set[str]:
    """Every path under `root`, hidden ones included (a staging dir is hidden)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_in(workdir: Path, args: list[str]):
    """Invoke the CLI with `workdir` as the current directory (so a default runs/ would show)."""
    old = os.getcwd()
    os.chdir(workdir)
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(old)


def assert_refused(tmp_path: Path, args: list[str], names: str | tuple[str, ...]) -> str:
    """`args` exits 2 with one stderr line naming one of `names`, and writes nothing."""
    before = tree(tmp_path)
    result = run_in(tmp_path, args)
    err = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert result.stdout == "", result.stdout
    wanted = (names,) if isinstance(names, str) else names
    assert any(n.lower() in err.lower() for n in wanted), (wanted, err)
    assert tree(tmp_path) == before, tree(tmp_path) - before
    return err
