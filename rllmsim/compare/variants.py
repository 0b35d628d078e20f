"""Comparison variants: a name plus deployment flags that override the shared ones.

On the command line a variant is written `NAME:FLAGS`, for example `fp8kv:--kv-cache-dtype=fp8`
or `spec:--speculative-method=ngram,--num-speculative-tokens=4`. FLAGS are the same flags
`rllmsim simulate` takes for the deployment, separated by commas or spaces; `baseline:` (no flags)
is the shared deployment itself. The flags are parsed by the very click options that `simulate`
uses (`rllmsim.commands.options.deployment_options`), so every deployment flag works in a variant,
including ones added later, and only flags the variant actually gives override the shared values.

Workload flags are refused in a variant: a comparison runs one workload and one seed under every
variant, or its deltas would mix two causes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

import click
from click.core import ParameterSource

from rllmsim.commands.options import deployment_from_options, deployment_options, workload_options
from rllmsim.deployment import Deployment
from rllmsim.disaggregation import Disaggregation, disaggregation_from_options
from rllmsim.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")
# split FLAGS at commas that start a new flag, so a value may itself hold commas
_FLAG_SEPARATOR = re.compile(r",(?=\s*-)")


@dataclass(frozen=True)
class Variant:
    """One arm of a comparison: a named deployment (and router) to run the shared workload on.

    `flags` are the tokens the variant was written with and `overrides` the option values they set
    (by click parameter name); both are empty for a variant built directly from a `Deployment`.
    """

    name: str
    deployment: Deployment
    router: str = "round-robin"
    flags: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    disaggregation: Disaggregation | None = None  # prefill and decode pools (`rllmsim.disaggregation`)

    def __post_init__(self) -> None:
        check_name(self.name)


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError(f"variant name {name!r} must be 1-40 letters, digits or _.+- (starting with a "
                          "letter or digit), as in fp8kv:--kv-cache-dtype=fp8")
    return name


def split_spec(text: str) -> tuple[str, tuple[str, ...]]:
    """`NAME:FLAGS` -> (name, flag tokens)."""
    name, colon, flags = text.partition(":")
    name = name.strip()
    if not colon:
        raise ConfigError(f"--variant {text!r}: write NAME:FLAGS, as in fp8kv:--kv-cache-dtype=fp8 "
                          "('baseline:' with no flags is the shared deployment)")
    check_name(name)
    try:
        tokens = tuple(tok for part in _FLAG_SEPARATOR.split(flags) for tok in shlex.split(part))
    except ValueError as err:
        raise ConfigError(f"--variant {name}: cannot split flags {flags!r}: {err}") from None
    return name, tokens


@lru_cache(maxsize=1)
def _deployment_command() -> click.Command:
    """A throwaway command carrying exactly the deployment options of `simulate`."""

    @click.command("variant", add_help_option=False)
    @deployment_options
    def _variant(**_: Any) -> None:  # pragma: no cover - never invoked, only parsed
        pass

    return _variant


@lru_cache(maxsize=1)
def _workload_flags() -> frozenset[str]:
    @click.command("workload", add_help_option=False)
    @workload_options
    def _workload(**_: Any) -> None:  # pragma: no cover
        pass

    names: set[str] = set()
    for param in _workload.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return frozenset(names)


def parse_flags(name: str, tokens: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The option values (by parameter name) that `tokens` set explicitly; ConfigError otherwise."""
    for tok in tokens:
        flag = tok.split("=", 1)[0]
        if flag in _workload_flags():
            raise ConfigError(f"--variant {name}: {flag} is a workload option; every variant runs the same "
                              f"workload, so give {flag} once, outside the variants")
    command = _deployment_command()
    try:
        ctx = command.make_context(f"variant {name}", list(tokens))
    except click.ClickException as err:
        message = " ".join(err.format_message().split())
        raise ConfigError(f"--variant {name}: {message}") from None
    return {key: value for key, value in ctx.params.items()
            if ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE}


def variant_from_spec(text: str, shared: Mapping[str, Any]) -> Variant:
    """Parse `NAME:FLAGS` and resolve its deployment from the shared options plus its overrides."""
    name, tokens = split_spec(text)
    return variant_from_flags(name, tokens, shared)


def variant_from_flags(name: str, tokens: tuple[str, ...] | list[str], shared: Mapping[str, Any]) -> Variant:
    """A variant from flag tokens over `shared` (the deployment options of `simulate`, by name)."""
    check_name(name)
    overrides = parse_flags(name, tuple(tokens))
    merged = {**_deployment_defaults(), **dict(shared), **overrides}
    try:
        deployment = deployment_from_options(merged)
        pools = disaggregation_from_options(merged, deployment)
    except ConfigError as err:
        raise ConfigError(f"--variant {name}: {err}") from None
    return Variant(name, deployment, router=merged.get("router", "round-robin"), flags=tuple(tokens),
                   overrides=overrides, disaggregation=pools)


def _deployment_defaults() -> dict[str, Any]:
    """Every deployment option at its default, so `shared` may name only what it changes."""
    ctx = _deployment_command().make_context("variant", [])
    return dict(ctx.params)


def parse_variants(specs: tuple[str, ...] | list[str], shared: Mapping[str, Any]) -> list[Variant]:
    """All `--variant` values, in order; the first is the baseline. Names must be unique."""
    if not specs:
        raise ConfigError("give at least one --variant NAME:FLAGS; the first is the baseline, "
                          "e.g. --variant baseline: --variant fp8kv:--kv-cache-dtype=fp8")
    variants = [variant_from_spec(text, shared) for text in specs]
    seen: set[str] = set()
    for variant in variants:
        if variant.name in seen:
            raise ConfigError(f"--variant {variant.name}: the name is used twice; give each variant its own")
        seen.add(variant.name)
    return variants
