"""Execute the shipped notebooks in place, so GitHub and nbconvert show their outputs unrun.

This is how the committed outputs are made: each notebook runs top to bottom in a fresh kernel
from a scratch directory (nothing lands beside it), with the environment given by `--env`
(RLLMSIM_NOTEBOOK_QUICK=1 for the reduced capacity notebooks, for instance) and that alone of
the RLLMSIM_NOTEBOOK_* variables. Each cell's progress-bar updates are merged into their final
line; every cell's wall time is printed as it ends (what the notebooks' runtime notes quote)
and kept out of the file, as are per-cell timestamps, which would change on every run. A figure
is saved as its PNG alone: the interactive plotly JSON beside it (a timeline's can be 300 KB)
only a live kernel's frontend draws, and rerunning the cell brings it back. The environment the
outputs come from is recorded in the notebook's metadata (`rllmsim.executed_with`), which
tests/test_notebook_outputs.py checks against what the first cell says.

Run: PYTHONPATH=. python scripts/execute_notebooks.py [--env KEY=VALUE ...] NOTEBOOK [NOTEBOOK ...]
The kernel is the `python3` one of the Python running this script, so kaleido and a Chrome or
Chromium must be there for the figures' images (`pip install -e '.[notebooks]'`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import nbclient
import nbformat

PREFIX = "RLLMSIM_NOTEBOOK_"
PLOTLY = "application/vnd.plotly.v1+json"


class _CellClock:
    """Prints each code cell's wall time the moment it ends, so a long run shows where it is."""

    def __init__(self, name: str) -> None:
        self.name, self.started, self.total = name, 0.0, 0.0

    def start(self, **_: Any) -> None:
        self.started = time.perf_counter()

    def executed(self, cell: Any, cell_index: int, **_: Any) -> None:
        seconds = time.perf_counter() - self.started
        self.total += seconds
        print(f"{self.name} cell {cell_index:2d} {seconds:8.1f} s  {cell.source.splitlines()[0][:70]}", flush=True)


def images_only(book: nbformat.NotebookNode) -> None:
    """Drop the interactive plotly JSON from every output that also holds the figure's PNG."""
    for cell in book.cells:
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                output["data"].pop(PLOTLY, None)


def execute(path: Path, env: dict[str, str], timeout: int) -> None:
    """Run `path` under `env`, write it back with its outputs, print each cell's wall time."""
    for key in [k for k in os.environ if k.startswith(PREFIX)]:
        del os.environ[key]  # the mode is what --env says, not what this shell happens to have
    os.environ.update(env)
    book = nbformat.read(path, as_version=4)
    clock = _CellClock(path.name)
    with tempfile.TemporaryDirectory(prefix="notebook-run-") as scratch:
        nbclient.NotebookClient(book, kernel_name="python3", timeout=timeout, coalesce_streams=True,
                                record_timing=False, on_cell_start=clock.start, on_cell_executed=clock.executed,
                                resources={"metadata": {"path": scratch}}).execute()
    for cell in book.cells:
        cell.metadata.pop("execution", None)  # left by earlier runs that recorded timing
    images_only(book)
    book.metadata["rllmsim"] = {"executed_with": dict(sorted(env.items()))}
    nbformat.write(book, path)
    print(f"{path.name}: {clock.total:.0f} s in all, {path.stat().st_size / 1024:.0f} KiB written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a {PREFIX}* variable for the kernel (repeatable)")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds one cell may run")
    args = parser.parse_args()
    if any("=" not in item or not item.startswith(PREFIX) for item in args.env):
        parser.error(f"--env takes {PREFIX}*=VALUE only")
    env = dict(item.split("=", 1) for item in args.env)
    for path in args.notebooks:
        execute(path, env, args.timeout)


if __name__ == "__main__":
    main()
