"""Build the kernel tables shipped in `rllmsim/data/kernels/` from `../shared/kernels`.

    python scripts/build_kernel_tables.py [--shared ../shared/kernels] [--vllm-version 0.19.0]

One vLLM version per op and GPU (the requested one where measured, else the newest), so what
ships stays small. Each GPU folder gets the tables, `tables.json` with the provenance of every
table, and the licence of each source; `fitted_efficiency.json` holds the efficiency curves fitted
across them for GPUs without tables (`rllmsim/cost/kernels/fitted.py`). Re-running it reproduces
the shipped files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllmsim.cost.kernels import fitted  # noqa: E402
from rllmsim.cost.kernels.importers import aiconfigurator, llmservingsim  # noqa: E402
from rllmsim.cost.kernels.tables import KernelTables  # noqa: E402
from rllmsim.errors import ConfigError  # noqa: E402
from rllmsim.specs import load_gpu  # noqa: E402

AICONFIGURATOR = {"repository": "ai-dynamo/aiconfigurator", "commit": "095f58a51c4c", "licence": "Apache-2.0",
                  "path": "aic-core/src/aiconfigurator_core/systems/data"}
LLMSERVINGSIM = {"repository": "casys-kaist/LLMServingSim", "commit": "5daddb21a545", "licence": "MIT",
                 "path": "profiler/perf"}
#: aiconfigurator system -> the system's GPU (resolved through the catalog's aliases)
SYSTEMS = ("a100_sxm", "h100_sxm", "h200_sxm", "b200_sxm", "b300_sxm", "gb200", "gb300", "l40s",
           "rtx_pro_6000_server", "b60")
LAYER_GPUS = ("RTXPRO6000", "RTX4090")


def build(shared: Path, out: Path, vllm_version: str) -> list[str]:
    built: dict[str, KernelTables] = {}
    licences: dict[str, list[Path]] = {}
    for system in SYSTEMS:
        if not (shared / "aiconfigurator-vllm" / "data" / system).is_dir():
            continue
        try:
            gpu = load_gpu(system).name
        except ConfigError:
            print(f"skipped {system}: no catalog GPU resolves it (add it to rllmsim/specs/gpus.toml)")
            continue
        tables = aiconfigurator.import_system(shared / "aiconfigurator-vllm" / "data", system, vllm_version)
        tables.meta["sources"] = [dict(AICONFIGURATOR, system=system)]
        built[gpu] = tables
        licences.setdefault(gpu, []).append(shared / "aiconfigurator-vllm" / "LICENSE")
    for folder in LAYER_GPUS:
        gpu_dir = shared / "llmservingsim-vllm0.19" / folder
        if not gpu_dir.is_dir():
            continue
        layers = llmservingsim.as_tables(gpu_dir)
        gpu = load_gpu(folder).name
        if gpu in built:
            built[gpu].layer_profiles.extend(layers.layer_profiles)
            built[gpu].meta["sources"].append(dict(LLMSERVINGSIM, gpu=folder))
        else:
            layers.meta["sources"] = [dict(LLMSERVINGSIM, gpu=folder)]
            built[gpu] = layers
        licences.setdefault(gpu, []).append(shared / "llmservingsim-vllm0.19" / "LICENSE")
    for gpu, tables in built.items():
        tables.save(out / gpu)
        for licence in licences[gpu]:
            shutil.copyfile(licence, out / gpu / f"LICENSE-{licence.parent.name}")
        (out / gpu / "PROVENANCE.md").write_text(provenance(gpu, tables))
    # the fitted roofline of GPUs without tables: efficiency curves across the folders just written
    fit_on = {gpu: KernelTables.load(out / gpu) for gpu in fitted.FIT_GPUS if gpu in built}
    if fit_on:
        fitted.write(fitted.fit(fit_on), out / fitted.FILENAME)
    return sorted(built)


def provenance(gpu: str, tables: KernelTables) -> str:
    """A human-readable account of where every table of one GPU comes from."""
    lines = [f"# Kernel tables of {gpu}", "",
             f"Measured on: {tables.meta.get('device', 'unknown device')}. Derived, never edited by hand:",
             "`python scripts/build_kernel_tables.py` rebuilds this folder from `../shared/kernels`.", "",
             "## Sources", ""]
    for source in tables.meta.get("sources", []):
        lines.append(f"- {source['repository']} at {source['commit']} ({source['licence']}, licence copied beside "
                     f"these files), `{source['path']}`, {source.get('system') or source.get('gpu')}")
    lines += ["", "## Tables", ""]
    for name, version in sorted(tables.meta.get("vllm_versions", {}).items()):
        lines.append(f"- `{name}`: version {version}")
    dtype_versions = tables.meta.get("moe_dtype_versions", {})
    if dtype_versions:
        lines.append("- `moe_perf` per dtype: " + ", ".join(f"{d} {v}" for d, v in dtype_versions.items())
                     + f" (MXFP4: the kernel vLLM runs gpt-oss with on this GPU family, "
                     f"{aiconfigurator.gpu_family(tables.meta.get('device', ''))})")
    for profile in tables.layer_profiles:
        lines.append(f"- layer profile `{profile.name}`: {profile.meta['hf_id']} at TP {profile.meta['tp']}, "
                     f"vLLM {profile.meta['vllm_version']}, eager={profile.meta['enforce_eager']}")
    lines += ["", "Latencies are microseconds; comm message sizes are bytes (the source counts elements)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--shared", type=Path, default=root.parent / "shared" / "kernels")
    parser.add_argument("--out", type=Path, default=root / "rllmsim" / "data" / "kernels")
    parser.add_argument("--vllm-version", default="0.19.0")
    args = parser.parse_args()
    for gpu in build(args.shared, args.out, args.vllm_version):
        size = sum(p.stat().st_size for p in (args.out / gpu).rglob("*") if p.is_file())
        print(f"{gpu}: {size / 1e6:.2f} MB")
    if (args.out / fitted.FILENAME).is_file():
        print(f"{fitted.FILENAME}: {(args.out / fitted.FILENAME).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
