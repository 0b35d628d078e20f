"""The `rllmsim` command line: a click group whose subcommands live in `rllmsim.commands`.

User mistakes raise `ConfigError`; they are printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from rllmsim.errors import ConfigError

SUBCOMMANDS: tuple[str, ...] = (
    "simulate",
    "profile",
    "calibrate",
    "sweep",
    "plan",
    "report",
    "validate",
    "compare",
    "kernels",
)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # noqa: D102 - click hook
        try:
            return super().invoke(ctx)
        except ConfigError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="rllmsim")
def main() -> None:
    """rllmsim: simulate vLLM serving of reasoning LLMs, calibrated on real engines."""


for _name in SUBCOMMANDS:
    main.add_command(importlib.import_module(f"rllmsim.commands.{_name}").command)
