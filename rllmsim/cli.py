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
    "list",
)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # noqa: D102 - click hook
        try:
            return super().invoke(ctx)
        except ConfigError as err:
            click.echo(f"error: {_one_line(str(err))}", err=True)
            sys.exit(2)
        except click.UsageError as err:  # click's own: a bad flag value, an unknown option or command
            where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
            click.echo(f"error: {where}{_one_line(err.format_message())}", err=True)
            sys.exit(2)


def _one_line(text: str) -> str:
    """A message promised as one line stays one line, whatever a file's content put in it."""
    return " ".join(text.split())


@click.group(cls=_Group)
@click.version_option(package_name="rllmsim")
def main() -> None:
    """rllmsim: simulate vLLM serving of reasoning LLMs, calibrated on real engines."""


for _name in SUBCOMMANDS:
    main.add_command(importlib.import_module(f"rllmsim.commands.{_name}").command)
