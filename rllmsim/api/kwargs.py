"""Keyword arguments in, the CLI's option dict out: names, aliases, defaults and types.

The API does not restate the CLI's option table: it reads the very click options `simulate` uses
(`rllmsim.commands.options`), so a flag added there is a keyword here, with the same default and
type check, and every alias a flag has (`--tensor-parallel-size`, `--num-prompts`) is a keyword
alias (`tensor_parallel_size`, `num_prompts`).
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any, Iterable, Mapping

import click

from rllmsim.commands.options import deployment_options, workload_options
from rllmsim.errors import ConfigError


_OPTIONS = {"deployment": deployment_options, "workload": workload_options}


@lru_cache(maxsize=None)
def _command(kind: str) -> click.Command:
    """A throwaway command carrying the deployment or the workload options (never invoked)."""

    @click.command(kind, add_help_option=False)
    def _options(**_: Any) -> None:  # pragma: no cover - parsed, never run
        pass

    return _OPTIONS[kind](_options)


@lru_cache(maxsize=1)
def _params() -> dict[str, click.Parameter]:
    return {param.name: param for kind in _OPTIONS for param in _command(kind).params if param.name}


def names(kind: str) -> tuple[str, ...]:
    """The option names of one kind: "deployment" or "workload"."""
    return tuple(param.name for param in _command(kind).params if param.name)


def defaults() -> dict[str, Any]:
    """Every deployment and workload option at the value the CLI gives it when the flag is absent."""
    return {k: v for kind in _OPTIONS for k, v in _command(kind).make_context(kind, []).params.items()}


@lru_cache(maxsize=1)
def aliases() -> dict[str, str]:
    """Keyword -> option name: each option's own name and each of its flags, as a Python name."""
    out: dict[str, str] = {}
    for name, param in _params().items():
        out[name] = name
        for flag in getattr(param, "opts", ()):
            out.setdefault(flag.lstrip("-").replace("-", "_"), name)
    return out


def unknown(where: str, name: str, valid: Iterable[str]) -> ConfigError:
    """One line naming the keyword and the closest valid one."""
    close = difflib.get_close_matches(name, sorted(set(valid)), n=1, cutoff=0.5)
    fix = f"did you mean {close[0]!r}?" if close else "see docs/api.md for the keywords"
    return ConfigError(f"{where}: unknown keyword {name!r}; {fix}")


def resolve(where: str, given: Mapping[str, Any], allowed: Iterable[str] | None = None,
            extra: Iterable[str] = ()) -> dict[str, Any]:
    """`given` keywords as option names with click-checked values. Only names in `allowed` (all the
    options when None) are accepted; `extra` are the function's own keywords, named in suggestions;
    `where` starts each message ("simulate()")."""
    table = aliases()
    names = set(table.values()) if allowed is None else set(allowed)
    valid = [k for k, v in table.items() if v in names] + list(extra)
    out: dict[str, Any] = {}
    for key, value in given.items():
        name = table.get(key)
        if name not in names:
            raise unknown(where, key, valid)
        if name in out:
            raise ConfigError(f"{where}: {key!r} and another alias both set {name!r}; give it once")
        out[name] = convert(name, value)
    return out


def convert(name: str, value: Any) -> Any:
    """The value as the flag's click type would parse it; a bad one is one line naming the keyword."""
    param = _params()[name]
    if value is None or name in ("model", "gpu", "draft_model"):
        return value  # model/gpu/draft_model may be spec objects; their loaders check them
    if isinstance(param.type, click.types.IntParamType) and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        return param.type.convert(value, param, None)
    except click.BadParameter as err:
        raise ConfigError(f"{name}={value!r}: {' '.join(err.format_message().split())}") from None


def flag_text(name: str, value: Any) -> str:
    """The CLI flag that sets option `name` to `value`, e.g. `--kv-cache-dtype=fp8`."""
    param = _params()[name]
    flag = max(param.opts, key=len)
    if isinstance(value, bool) and getattr(param, "secondary_opts", None):
        return flag if value else param.secondary_opts[0]
    if isinstance(value, bool):
        return flag
    return f"{flag}={value}"


def goodput_items(goodput: str | Iterable[str] | Mapping[str, float] | None) -> tuple[str, ...]:
    """`{"ttft": 500}`, "ttft:500 tpot:50" or a sequence of such strings -> the CLI's --goodput values."""
    if goodput is None:
        return ()
    if isinstance(goodput, str):
        return (goodput,)
    if isinstance(goodput, Mapping):
        return tuple(f"{metric}:{limit}" for metric, limit in goodput.items())
    return tuple(str(item) for item in goodput)
