"""Per-op time shares of a decode and a prefill step on two GPUs, from the kernel cost model.

    python scripts/plot_op_shares.py [--out docs/figures/op_shares.png]

Prints the table behind the figure (docs/cost_models.md quotes it) and writes the PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rllmsim.cost.kernels.model import KernelCostModel  # noqa: E402
from rllmsim.cost.kernels.tables import shipped_tables  # noqa: E402
from rllmsim.deployment import Deployment  # noqa: E402
from rllmsim.specs import load_gpu, load_model  # noqa: E402

CASES = {
    "decode: 64 seqs x 4k context": dict(prefill_tokens=0, prefill_context=0, decode_seqs=64, decode_context=4096),
    "prefill: 4k-token chunk": dict(prefill_tokens=4096, prefill_context=0, decode_seqs=0, decode_context=0),
}
GPUS = ("h100-sxm", "b200")
MODEL = "deepseek-r1-distill-qwen-32b"
GROUPS = {"qkv_proj": "QKV/O GEMMs", "o_proj": "QKV/O GEMMs", "gate_up_proj": "MLP GEMMs", "down_proj": "MLP GEMMs",
          "decode_attention": "attention", "prefill_attention": "attention", "allreduce": "all-reduce",
          "lm_head": "lm_head + sampler", "sampler": "lm_head + sampler", "elementwise": "norms/act/rotary",
          "host": "host (hidden by async)"}


def shares() -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for gpu in GPUS:
        d = Deployment(model=load_model(MODEL), gpu=load_gpu(gpu), tp=2)
        model = KernelCostModel(d, shipped_tables(gpu))
        for label, case in CASES.items():
            grouped: dict[str, float] = {}
            for op, seconds in model.breakdown(**case).items():
                grouped[GROUPS.get(op, op)] = grouped.get(GROUPS.get(op, op), 0.0) + seconds
            out[(gpu, label)] = grouped
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "figures" / "op_shares.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = shares()
    groups = sorted({g for parts in data.values() for g in parts})
    fig, ax = plt.subplots(figsize=(9, 3.6))
    labels = [f"{gpu}\n{label}" for gpu, label in data]
    left = [0.0] * len(data)
    for group in groups:
        gpu_only = [parts.get(group, 0.0) / sum(v for k, v in parts.items() if not k.startswith("host"))
                    for parts in data.values()]
        ax.barh(labels, gpu_only if not group.startswith("host") else [0] * len(data), left=left, label=group)
        left = [a + b for a, b in zip(left, gpu_only)] if not group.startswith("host") else left
    ax.set_xlabel(f"share of GPU step time ({MODEL}, TP 2)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"| GPU | step | {' | '.join(groups)} | GPU ms |")
    print("|---|---|" + "---|" * (len(groups) + 1))
    for (gpu, label), parts in data.items():
        gpu_ms = sum(v for k, v in parts.items() if not k.startswith("host")) * 1e3
        cells = [f"{100 * parts.get(g, 0.0) * 1e3 / gpu_ms:.1f}%" if not g.startswith("host")
                 else f"{parts.get(g, 0.0) * 1e3:.2f} ms" for g in groups]
        print(f"| {gpu} | {label} | {' | '.join(cells)} | {gpu_ms:.2f} |")
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
