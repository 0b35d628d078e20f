"""Leave-one-out check of the fitted roofline (`rllmsim/cost/kernels/fitted.py`).

    python scripts/fitted_roofline_check.py [--detail]

For each GPU with measured kernel tables: fit the efficiency curves on the other GPUs, synthesize
this GPU's tables from them and its datasheet peaks, and compare the kernel model's GPU time per
step on the synthetic tables (and the plain roofline's) with the kernel model on the GPU's real
tables. Host time is left out of all three (it is the same assumption in each). The Intel Arc Pro
B60 is checked as an out-of-family GPU, fitted on all the NVIDIA ones (as the AMD MI300X is).
Prints markdown: one summary row per GPU, and with --detail every step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllmsim.cost.features import BatchShape, StepFeatures  # noqa: E402
from rllmsim.cost.kernels import fitted  # noqa: E402
from rllmsim.cost.kernels.host import HostParams  # noqa: E402
from rllmsim.cost.kernels.model import KernelCostModel  # noqa: E402
from rllmsim.cost.kernels.tables import shipped_tables  # noqa: E402
from rllmsim.cost.roofline import RooflineCostModel, RooflineParams  # noqa: E402
from rllmsim.deployment import Deployment  # noqa: E402
from rllmsim.errors import ConfigError  # noqa: E402
from rllmsim.specs import load_gpu, load_model  # noqa: E402

DEPLOYMENTS = (("deepseek-r1-distill-qwen-7b", 1), ("qwen3-32b", 2))
STEPS = tuple([(f"decode {b} x {c // 1024}k", BatchShape(decode_contexts=(c,) * b))
               for b in (1, 32, 256) for c in (2048, 8192)]
              + [("prefill 2k chunk", BatchShape(prefill_chunks=((2048, 0),)))])
OUT_OF_FAMILY = ("arc-pro-b60",)
NO_HOST = HostParams(step_s=0.0, per_seq_s=0.0)


def _deployment(model: str, gpu: str, tp: int) -> Deployment:
    return Deployment(model=load_model(model), gpu=load_gpu(gpu), tp=tp, max_num_seqs=256,
                      max_num_batched_tokens=2048, max_model_len=16384, async_scheduling=False)


def step_ms(model, shape: BatchShape) -> float:
    return float(model.step_time(StepFeatures.from_shapes([shape]))[0]) * 1e3


def check(gpu: str, fit: dict) -> list[dict]:
    """Rows of (deployment, step, real ms, fitted error, roofline error) for one GPU."""
    real_tables = shipped_tables(gpu)
    synthetic = fitted.synthesize(load_gpu(gpu), fit)
    rows = []
    for model, tp in DEPLOYMENTS:
        try:
            d = _deployment(model, gpu, tp)
            real = KernelCostModel(d, real_tables, host=NO_HOST)
        except ConfigError:
            continue  # it does not fit in memory, or the real tables cannot time it (no all-reduce rows)
        fit_model = KernelCostModel(d, synthetic, host=NO_HOST)
        roof = RooflineCostModel(d, RooflineParams(step_overhead_s=0.0, per_seq_overhead_s=0.0))
        for name, shape in STEPS:
            truth = step_ms(real, shape)
            rows.append({"gpu": gpu, "deployment": f"{model} TP{tp}", "step": name, "real_ms": truth,
                         "measured": _attention_measured(real, shape),
                         "fitted": step_ms(fit_model, shape) / truth - 1, "roofline": step_ms(roof, shape) / truth - 1})
    return rows


def _attention_measured(model: KernelCostModel, shape: BatchShape) -> bool:
    """Whether the real tables measured this step's attention (else they extrapolate it too)."""
    if shape.decode_contexts:
        return not bool(model.ops.decode_attention.outside(float(len(shape.decode_contexts)),
                                                           float(shape.decode_contexts[0])))
    chunk = float(shape.prefill_chunks[0][0])
    return not model.ops.prefill_attention.outside_scalar(chunk, chunk)


def leave_one_out(gpu: str, tables: dict, families: dict | None) -> list[dict]:
    others = tuple(g for g in fitted.FIT_GPUS if g != gpu)
    return check(gpu, fitted.fit(tables, others, families))


def _summary(label: str, rows: list[dict]) -> str:
    f = np.array([r["fitted"] for r in rows])
    r = np.array([r["roofline"] for r in rows])
    return (f"| {label} | {len(rows)} | {np.median(np.abs(f)):.0%} | {f[np.argmax(np.abs(f))]:+.0%} | "
            f"{np.median(np.abs(r)):.0%} | {r[np.argmax(np.abs(r))]:+.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detail", action="store_true", help="print every step, not only the summary")
    parser.add_argument("--no-families", action="store_true",
                        help="plain median across GPUs, not across architectures")
    args = parser.parse_args()
    families = None if args.no_families else fitted.FAMILIES
    tables = {g: shipped_tables(g) for g in fitted.FIT_GPUS}
    rows = []
    for gpu in fitted.FIT_GPUS:
        rows += leave_one_out(gpu, tables, families)
    everything = fitted.fit(tables, None, families)
    for gpu in OUT_OF_FAMILY:
        rows += check(gpu, everything)
    measured = [r for r in rows if r["measured"]]
    print("Steps whose attention the real tables measured (GPU time, host excluded):")
    print()
    print("| GPU (left out) | steps | fitted: median abs error | fitted: worst | roofline: median abs error "
          "| roofline: worst |")
    print("|---|---|---|---|---|---|")
    for gpu in (*fitted.FIT_GPUS, *OUT_OF_FAMILY):
        mine = [r for r in measured if r["gpu"] == gpu]
        if mine:
            print(_summary(gpu, mine))
    print(_summary("all left out", [r for r in measured if r["gpu"] in fitted.FIT_GPUS]))
    print()
    print("| step | GPU x deployment pairs | fitted: median abs error | fitted: worst | roofline: median abs error "
          "| roofline: worst |")
    print("|---|---|---|---|---|---|")
    for name, _ in STEPS:
        mine = [x for x in rows if x["step"] == name and x["gpu"] in fitted.FIT_GPUS]
        hit = [x for x in mine if x["measured"]]
        if hit:
            print(_summary(name, hit))
        if len(hit) < len(mine):
            print(_summary(f"{name} (real tables extrapolate attention)", [x for x in mine if not x["measured"]]))
    if args.detail:
        print()
        print("| GPU | deployment | step | real tables ms | attention measured | fitted | roofline |")
        print("|---|---|---|---|---|---|---|")
        for x in rows:
            print(f"| {x['gpu']} | {x['deployment']} | {x['step']} | {x['real_ms']:.3f} | "
                  f"{'yes' if x['measured'] else 'no'} | {x['fitted']:+.1%} | {x['roofline']:+.1%} |")


if __name__ == "__main__":
    main()
