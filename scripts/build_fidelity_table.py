"""Measure how far the simulator is from each real vLLM run in ../shared/validation, and write the
errors to `rllmsim/data/fidelity/validated.json`, the table every run's fidelity line reads.

Nothing here is typed by hand: each entry is what `rllmsim validate` prints for that run with the
default cost model, at the commit this script runs on. Re-run it after any change that moves the
numbers (docs/validation.md lists the commands one by one):

    python scripts/build_fidelity_table.py [--shared ../shared/validation]

Replays (LLMServingSim's request logs) give signed P50 errors; closed-loop rows (aiconfigurator's
silicon CSV) give, per model, MAPE over their rows. The package ships only these error figures,
not the measurements.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rllmsim.cost.kernels.tables import shipped_tables  # noqa: E402
from rllmsim.fidelity import TABLE  # noqa: E402
from rllmsim.specs import load_model  # noqa: E402

REPLAYS = {  # folder: (source, licence, workload)
    "llmservingsim-vllm0.19/RTXPRO6000_Llama-3.1-8B": ("casys-kaist/LLMServingSim @ 5daddb21a545", "MIT",
                                                      "300 ShareGPT requests at ~10 req/s"),
    "llmservingsim-vllm0.19/RTXPRO6000_Qwen3-32B": ("casys-kaist/LLMServingSim @ 5daddb21a545", "MIT",
                                                   "300 ShareGPT requests at ~10 req/s"),
}
CLOSED_LOOP = {  # file: (source, licence, GPU)
    "aiconfigurator-silicon/vllm_h100_sxm.csv": ("ai-dynamo/aiconfigurator @ 095f58a51c4c", "Apache-2.0", "h100-sxm"),
}
METRICS = ("ttft", "tpot", "e2el")


def _validate(path: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-c", "from rllmsim.cli import main; main()", "validate", str(path), "--out", str(out)], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)


def _model_facts(name: str) -> dict:
    spec = load_model(name)
    return {"model": spec.name, "params_b": round(spec.param_count() / 1e9, 2), "moe": spec.is_moe}


def replay_entry(folder: str, out: Path) -> dict:
    source, licence, workload = REPLAYS[folder]
    report = json.loads((out / "validation.json").read_text())
    errors = pd.read_csv(out / "errors.csv").set_index(["metric", "stat"])["signed_error"]
    dep, cost = report["deployment"], report["cost_model"]
    return {"case": folder.split("/")[-1], "kind": "replay", "source": f"{source} ({licence})", "workload": workload,
            "gpu": dep["gpu"], **_model_facts(dep["model"]), "tp": [dep["tp"]], "vllm_version": dep["vllm_version"],
            "cost_model": cost["kind"], "basis": (cost.get("ops") or {}).get("linear", cost["kind"]),
            "stat": "signed P50 error, %", "cases": 1,
            "errors": {m: round(float(errors.loc[(m, "p50")]), 1) for m in METRICS}}


def closed_loop_entries(name: str, csv: Path, out: Path) -> list[dict]:
    source, licence, gpu = CLOSED_LOOP[name]
    mape = pd.read_csv(out / "mape.csv")
    cases = pd.read_csv(out / "cases.csv")
    done = cases[cases["skipped"].isna() & cases["excluded"].isna()]
    rows_of = pd.read_csv(csv, index_col=False)
    versions = rows_of.groupby("model_path")["backend_version"].apply(lambda v: sorted(set(v.dropna().astype(str))))
    entries = []
    for row in mape.itertuples():
        if row.model == "all" or not row.cases:
            continue
        rows = done[done["model"] == row.model]
        entries.append({
            "case": f"{name.split('/')[-1]}: {row.model}", "kind": "closed-loop", "source": f"{source} ({licence})",
            "workload": f"{row.cases} closed-loop benchmarks (fixed prompt/output lengths, "
                        f"{int(rows['users'].min())}-{int(rows['users'].max())} users)",
            "gpu": gpu, **_model_facts(row.model), "tp": sorted(int(t) for t in rows["tp"].unique()),
            "vllm_version": ", ".join(versions.get(row.model, [])) or "not recorded",
            "cost_model": "kernels" if shipped_tables(gpu) is not None else "kernels (fitted roofline)",
            "basis": "default cost model",
            "stat": "MAPE over the rows, %", "cases": int(row.cases),
            "errors": {m: round(float(getattr(row, f"{m}_mape_pct")), 1) for m in METRICS}})
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "validation")
    args = parser.parse_args()
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in REPLAYS:
            out = Path(tmp) / folder.replace("/", "_")
            _validate(args.shared / folder, out)
            entries.append(replay_entry(folder, out))
        for name in CLOSED_LOOP:
            out = Path(tmp) / name.replace("/", "_")
            _validate(args.shared / name, out)
            entries += closed_loop_entries(name, args.shared / name, out)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    table = {"generated_by": "scripts/build_fidelity_table.py", "commit": commit,
             "date": datetime.date.today().isoformat(), "entries": entries}
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    staging = TABLE.with_suffix(".json.tmp")
    staging.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    staging.replace(TABLE)
    print(f"{len(entries)} validated cases written to {TABLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
