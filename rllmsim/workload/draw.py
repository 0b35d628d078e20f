"""Draw a synthetic workload's requests: lengths, reasoning split, and ServeGen arrivals.

One place resolves what `--dataset` means for the serving model (a per-model law, a catalog
dataset, a mix, a lengths file or the ServeGen pool), so the CLI, sweeps and notebooks all get
the same requests for the same seed. Lengths are drawn uncut; the thinking budget and the token
budget are applied after the reasoning/answer split (`reasoning.split_output`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from rllmsim.errors import ConfigError
from rllmsim.rng import RngStreams
from rllmsim.workload import model_lengths, servegen
from rllmsim.workload.lengths import EmpiricalLengths, dataset_names, get_dataset, sample_lengths, sample_mixture
from rllmsim.workload.reasoning import family_share, split_output

if TYPE_CHECKING:
    from rllmsim.simulation import WorkloadSpec


@dataclass
class DrawnRequests:
    """Per-request arrays of a synthetic workload; `arrival_s` only for ServeGen arrivals."""

    prompt: np.ndarray
    output: np.ndarray
    reasoning: np.ndarray
    labels: str | np.ndarray
    arrival_s: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def draw_requests(spec: "WorkloadSpec", streams: RngStreams, model: str | None = None) -> DrawnRequests:
    """The requests of `spec` for a deployment serving `model`: one per turn of each of its
    `num_requests` conversations (`spec.turns` of them, 1 unless multi-turn)."""
    n, rng = spec.num_requests * spec.turns, streams.stream("lengths")
    if spec.servegen_start_s is not None and spec.arrival != "servegen":
        raise ConfigError("--servegen-start only applies to --arrival servegen; drop it or set --arrival servegen")
    arrivals = rows = None
    if spec.arrival == "servegen":
        arrivals, rows = servegen.load_pool().arrivals(spec.rate, n, streams.stream("arrivals"), spec.servegen_start_s)
    notes: list[str] = []
    if spec.lengths_file:
        source = EmpiricalLengths.from_file(spec.lengths_file)
        prompt, output = sample_lengths(source, n, rng)
        labels, share = source.name, 0.0
    elif spec.dataset == servegen.DATASET:
        pool = servegen.load_pool()
        prompt, output, share = pool.sample(rows if rows is not None else pool.pooled_rows(n, rng), rng)
        labels = servegen.DATASET
    elif ":" in spec.dataset or "," in spec.dataset:
        prompt, output, labels = sample_mixture(parse_mixture(spec.dataset), n, rng)
        kinds = {name: get_dataset(name).kind for name in set(labels.tolist())}
        share = np.array([family_share(model) if kinds[x] == "reasoning" else 0.0 for x in labels])
    else:
        resolved = model_lengths.resolve(spec.dataset, model)
        if resolved is not None:
            source, note = resolved
            notes += [note] if note else []
        else:
            source = get_dataset(spec.dataset)
        prompt, output = sample_lengths(source, n, rng)
        labels = source.name if resolved is not None else spec.dataset
        share = family_share(model) if source.kind == "reasoning" else 0.0
    output, reasoning = split_output(output, share, spec.max_tokens, spec.reasoning_budget)
    return DrawnRequests(prompt, output, reasoning, labels, arrivals, notes)


def check_dataset(name: str) -> None:
    """ConfigError (one line, listing the choices) unless `name` is a dataset some path draws:
    the catalog's, a per-model benchmark, or the ServeGen pool."""
    if name == servegen.DATASET or model_lengths.ALIASES.get(name, name) in model_lengths.PROMPTS_FROM:
        return
    try:
        get_dataset(name)
    except ConfigError:
        extra = sorted({servegen.DATASET, *model_lengths.PROMPTS_FROM} - set(dataset_names()))
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names() + extra)}") from None


def parse_mixture(text: str) -> dict[str, float]:
    """"math-500:0.5,aime-2024:0.5" -> weights by dataset (a bare name weighs 1)."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition(":")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"dataset mix {text!r}: weight {weight!r} is not a number; "
                              "write e.g. math-500:0.5,aime-2024:0.5") from None
    return weights
