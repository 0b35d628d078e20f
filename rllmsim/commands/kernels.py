"""`rllmsim kernels`: bring your own kernel measurements, and see which GPUs have tables."""

from __future__ import annotations

from pathlib import Path

import click

from rllmsim.errors import ConfigError


@click.group("kernels")
def command() -> None:
    """Kernel tables of the op-level cost model (see docs/cost_models.md)."""


@command.command("import")
@click.argument("source", type=click.Choice(["aiconfigurator", "llmservingsim"]))
@click.argument("path", type=click.Path())
@click.option("--system", default=None, help="aiconfigurator: the system folder under PATH (e.g. h100_sxm).")
@click.option("--vllm-version", default="0.19.0", show_default=True,
              help="aiconfigurator: the vLLM version to take per op where measured (else the newest).")
@click.option("--out", "out_dir", required=True, help="Folder to write the tables to (then --kernel-tables).")
def import_command(source: str, path: str, system: str | None, vllm_version: str, out_dir: str) -> None:
    """Convert an aiconfigurator kernel database or LLMServingSim layer profiles into a table folder."""
    from rllmsim.cost.kernels.importers import aiconfigurator, llmservingsim

    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"{source} data: {root} is not a folder")
    if source == "aiconfigurator":
        if not system:
            raise ConfigError("--system is required for aiconfigurator data (a folder name under PATH, e.g. h100_sxm)")
        tables = aiconfigurator.import_system(root, system, vllm_version)
    else:
        tables = llmservingsim.as_tables(root)
    tables.meta["sources"] = [{"imported_from": str(root.resolve()), "format": source}]
    tables.save(out_dir)
    counts = ", ".join(f"{name} {len(frame)} rows" for name, frame in sorted(tables.tables.items()))
    profiles = ", ".join(p.name for p in tables.layer_profiles)
    click.echo(f"kernel tables written to {out_dir}: {counts or 'no kernel tables'}"
               + (f"; layer profiles: {profiles}" if profiles else ""))


@command.command("list")
def list_command() -> None:
    """The GPUs whose kernel tables ship with rllmsim, with their sources."""
    from rllmsim.cost.kernels.tables import shipped_gpus, shipped_tables

    for gpu in shipped_gpus():
        tables = shipped_tables(gpu)
        versions = sorted(set(tables.meta.get("vllm_versions", {}).values()))
        click.echo(f"{gpu:14s} {tables.meta.get('device', ''):46s} tables: {', '.join(sorted(tables.tables)) or '-'}"
                   f"; layer profiles: {len(tables.layer_profiles)}; versions: {', '.join(versions)}")
