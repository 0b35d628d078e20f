"""`rllmsim list models|gpus|datasets`: what the catalogs hold, and where each entry comes from.

Every name a flag accepts (--model, --gpu, --dataset) is listed here with its source, so a user
can pick one and judge how far to trust it without reading the data files.
"""

from __future__ import annotations

from typing import Callable

import click

from rllmsim.specs import gpu_names, load_gpu, load_model, model_names
from rllmsim.specs.model_catalog import config_source
from rllmsim.workload import model_lengths, servegen
from rllmsim.workload.lengths import dataset_names, get_dataset

SOURCE_WIDTH = 100  # sources are paragraphs; the first sentence, cut to this, fits a terminal


def _models() -> tuple[list[str], list[list[str]]]:
    rows = []
    for name in model_names():
        m = load_model(name)
        active = f"{m.published_active_params_b:g}" if m.published_active_params_b else "-"
        params = f"{m.published_params_b:g}" if m.published_params_b else "-"
        rows.append([name, m.hf_id, params, active, "yes" if m.reasoning else "no", config_source(name)])
    return ["model", "hf_id", "params_b", "active_b", "reasoning", "config source"], rows


def _gpus() -> tuple[list[str], list[list[str]]]:
    rows = []
    for name in gpu_names():
        g = load_gpu(name)
        rows.append([name, g.display_name, f"{g.hbm_gib:g}", f"{g.hbm_bandwidth_gbps:g}", f"{g.bf16_tflops:g}",
                     f"{g.price_per_gpu_hour_usd:.2f}", f"{g.price_source} ({g.price_date})" if g.price_source else "-"])
    return ["gpu", "device", "hbm_gib", "hbm_gb_s", "bf16_tflops", "usd_per_gpu_h",
            "price source (datasheet sources: rllmsim/specs/gpus.toml)"], rows


def _datasets() -> tuple[list[str], list[list[str]]]:
    rows = []
    for name in dataset_names():
        d = get_dataset(name)
        mean = f"{d.reported_mean:g}" if d.reported_mean else "-"
        rows.append([name, d.kind, mean, "datasets.toml: " + d.provenance])
    per_model = "model_lengths.toml: per-model output laws fitted to DEER's published means (reasoning models)"
    for name in sorted(set(model_lengths.PROMPTS_FROM) - set(dataset_names())):
        rows.append([name, "reasoning", "per model", per_model])
    rows.append([servegen.DATASET, "production", "-",
                 "alibaba/ServeGen DeepSeek-R1 client pool (rllmsim/data/servegen/PROVENANCE.md)"])
    return ["dataset", "kind", "output_mean", "source"], rows


KINDS: dict[str, Callable[[], tuple[list[str], list[list[str]]]]] = {
    "models": _models, "gpus": _gpus, "datasets": _datasets}


def _short(text: str) -> str:
    first = " ".join(text.split()).split(". ")[0]
    return first if len(first) <= SOURCE_WIDTH else first[: SOURCE_WIDTH - 1] + "…"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns; the last column (the source) shortened to its first sentence."""
    rows = [row[:-1] + [_short(row[-1])] for row in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


@click.command("list")
@click.argument("kind", type=click.Choice(sorted(KINDS)))
def command(kind: str) -> None:
    """List the catalog's models, GPUs or datasets, each with its source."""
    click.echo(format_table(*KINDS[kind]()))
