"""Request lengths: how many prompt tokens each request brings and how many it will generate.

Reasoning workloads differ from chat mostly here: the same question costs a reasoning model
thousands of output tokens, with a long right tail, where a chat model answers in hundreds. The
per-dataset distributions live in `datasets.toml` beside this file, each with its provenance,
so changing a number is a data edit with its justification next to it.

A token budget (`max_tokens`, vLLM's SamplingParams name) caps every output:
output = min(output, max_tokens). Requests that hit it are the point of a budget sweep.

Lengths draw from the generator passed in; callers pass `RngStreams(seed).stream("lengths")`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from numbers import Integral
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.special import ndtr, ndtri

from rllmsim.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class LengthDist:
    """One token-count distribution: lognormal (median, sigma) or constant, bounded to [low, high]."""

    dist: str
    median: float
    sigma: float
    low: int
    high: int
    tail: str = "clip"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n int64 token counts in [low, high]; exactly n uniform-or-normal draws from `rng`."""
        if self.dist == "constant":
            return np.full(n, int(np.clip(round(self.median), self.low, self.high)), dtype=np.int64)
        mu = math.log(self.median)
        if self.tail == "truncate":
            lo = ndtr((math.log(self.low) - mu) / self.sigma)
            hi = ndtr((math.log(self.high) - mu) / self.sigma)
            x = np.exp(mu + self.sigma * ndtri(rng.uniform(lo, hi, size=n)))
        else:
            x = rng.lognormal(mu, self.sigma, size=n)
        return np.clip(np.rint(x), self.low, self.high).astype(np.int64)


@dataclass(frozen=True)
class DatasetLengths:
    """Prompt and output distributions of one named dataset, with where they came from."""

    name: str
    kind: str
    model: str
    provenance: str
    prompt: LengthDist
    output: LengthDist
    max_total: int | None = None
    reported_mean: float | None = None
    reported_prompt_mean: float | None = None

    def sample(
        self, n: int, rng: np.random.Generator, max_tokens: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(prompt_tokens, output_tokens), prompts drawn first, then outputs."""
        prompt = self.prompt.sample(n, rng)
        output = self.output.sample(n, rng)
        if self.max_total is not None:
            output = np.minimum(output, np.maximum(self.max_total - prompt, 1))
        return prompt, _apply_budget(output, max_tokens)


class LengthSource(Protocol):
    """Anything that samples (prompt, output) token counts: a named dataset or a user's file."""

    name: str

    def sample(
        self, n: int, rng: np.random.Generator, max_tokens: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ConfigError(f"n (number of requests) must be an integer >= 0, got {n!r}")
    return int(n)


def _apply_budget(output: np.ndarray, max_tokens: int | None) -> np.ndarray:
    if max_tokens is None:
        return output
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, Integral) or max_tokens < 1:
        raise ConfigError(f"max_tokens must be an integer >= 1 (the token budget), got {max_tokens!r}")
    return np.minimum(output, int(max_tokens))


def _parse_dist(spec: Mapping[str, Any], where: str) -> LengthDist:
    dist = spec.get("dist")
    if dist not in ("lognormal", "constant"):
        raise ConfigError(f"{where}: dist must be 'lognormal' or 'constant', got {dist!r}")
    tail = spec.get("tail", "clip")
    if tail not in ("clip", "truncate"):
        raise ConfigError(f"{where}: tail must be 'clip' or 'truncate', got {tail!r}")
    try:
        low, high = int(spec.get("min", 1)), int(spec["max"])
        median = float(spec["value"] if dist == "constant" else spec["median"])
        sigma = 0.0 if dist == "constant" else float(spec["sigma"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: missing or non-numeric field {exc}") from None
    if not (1 <= low <= high) or median <= 0 or sigma < 0 or (dist == "lognormal" and sigma == 0):
        raise ConfigError(f"{where}: need 1 <= min <= max, median > 0 and sigma > 0")
    return LengthDist(dist, median, sigma, low, high, tail)


def load_datasets(path: str | Path | None = None) -> tuple[dict[str, DatasetLengths], dict[str, str]]:
    """Parse a datasets TOML (the packaged one by default) into (datasets, aliases)."""
    if path is None:
        text = resources.files("rllmsim.workload").joinpath("datasets.toml").read_text("utf-8")
        where = "rllmsim/workload/datasets.toml"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read datasets file {where}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    out: dict[str, DatasetLengths] = {}
    for name, spec in data.get("datasets", {}).items():
        loc = f"{where} [datasets.{name}]"
        if "prompt" not in spec or "output" not in spec:
            raise ConfigError(f"{loc}: needs both a prompt and an output distribution")
        mt = spec.get("max_total")
        out[name] = DatasetLengths(
            name=name,
            kind=str(spec.get("kind", "unknown")),
            model=str(spec.get("model", "")),
            provenance=" ".join(str(spec.get("provenance", "")).split()),
            prompt=_parse_dist(spec["prompt"], f"{loc}.prompt"),
            output=_parse_dist(spec["output"], f"{loc}.output"),
            max_total=None if mt is None else int(mt),
            reported_mean=spec["output"].get("reported_mean"),
            reported_prompt_mean=spec["prompt"].get("reported_mean"),
        )
    aliases = {str(k): str(v) for k, v in data.get("aliases", {}).items()}
    return out, aliases


@lru_cache(maxsize=1)
def _catalog() -> tuple[dict[str, DatasetLengths], dict[str, str]]:
    return load_datasets()


def dataset_names() -> list[str]:
    """The canonical names of the packaged datasets, sorted."""
    return sorted(_catalog()[0])


def get_dataset(name: str) -> DatasetLengths:
    """A packaged dataset by name or alias; ConfigError listing the choices otherwise."""
    datasets, aliases = _catalog()
    key = aliases.get(name, name)
    if key not in datasets:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(datasets))}")
    return datasets[key]


def sample_lengths(
    dataset: str | LengthSource, n: int, rng: np.random.Generator, max_tokens: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_tokens, output_tokens) int64 arrays of n requests from one dataset."""
    n = _check_n(n)
    source = get_dataset(dataset) if isinstance(dataset, str) else dataset
    return source.sample(n, rng, max_tokens)


def sample_mixture(
    weights: Mapping[str, float],
    n: int,
    rng: np.random.Generator,
    max_tokens: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n requests drawn from a weighted mix of datasets: (prompt, output, dataset label).

    Each request's dataset is drawn first (one categorical draw per request), then each
    dataset's lengths in the order the mapping lists them, so the result depends only on the
    seed, the weights and n.
    """
    n = _check_n(n)
    if not weights:
        raise ConfigError("mixture weights are empty; give e.g. {'math-500': 0.5, 'aime-2024': 0.5}")
    names = list(weights)
    w = np.array([weights[k] for k in names], dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(f"mixture weights must be >= 0 with a positive sum, got {dict(weights)}")
    sources = [get_dataset(k) for k in names]
    pick = rng.choice(len(names), size=n, p=w / w.sum())
    prompt = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    for i, src in enumerate(sources):
        idx = np.flatnonzero(pick == i)
        prompt[idx], output[idx] = src.sample(idx.size, rng, max_tokens)
    labels = np.array([sources[i].name for i in range(len(names))], dtype=object)[pick]
    return prompt, output, labels


class EmpiricalLengths:
    """Lengths resampled (with replacement) from measured (prompt, output) pairs.

    Pairs are kept together, so the prompt/output correlation of the data survives. Read with
    `from_file` from CSV, JSONL or Parquet (columns prompt_tokens/output_tokens, or input_len/
    output_len, or input_toks/output_toks), any trace format `read_trace` knows, or a
    `vllm bench serve --save-detailed` result JSON (failed requests dropped).
    """

    def __init__(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, name: str) -> None:
        self.prompt_tokens = np.asarray(prompt_tokens, dtype=np.int64)
        self.output_tokens = np.asarray(output_tokens, dtype=np.int64)
        self.name = name
        if self.prompt_tokens.size == 0 or self.prompt_tokens.shape != self.output_tokens.shape:
            raise ConfigError(f"{name}: need at least one (prompt, output) pair of equal count")

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> "EmpiricalLengths":
        from rllmsim.workload.traces import read_length_pairs

        prompt, output = read_length_pairs(path)
        return cls(prompt, output, name or Path(path).stem)

    def sample(
        self, n: int, rng: np.random.Generator, max_tokens: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, self.prompt_tokens.size, size=_check_n(n))
        return self.prompt_tokens[idx], _apply_budget(self.output_tokens[idx], max_tokens)
