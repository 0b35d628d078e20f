"""A click option that takes several values after one flag, as argparse's nargs="+" does.

`vllm bench serve --goodput ttft:500 tpot:50` is argparse with nargs="+", and users paste it as
is. Click options cannot take nargs=-1, so this option, after its first value, also consumes the
following arguments up to the next one that starts with "-". It is `multiple=True` underneath, so
the quoted form ('ttft:500 tpot:50') and repeated flags keep working: each value arrives as one
item of the tuple.
"""

from __future__ import annotations

from typing import Any

import click


class MultiValueOption(click.Option):
    """`--flag A B C` = `--flag A --flag B --flag C`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is not None:
                option.process = _greedy(option.process)


def _greedy(process: Any) -> Any:
    def consume(value: Any, state: Any) -> None:
        process(value, state)
        while state.rargs and not str(state.rargs[0]).startswith("-"):
            process(state.rargs.pop(0), state)
    return consume
