"""The roofline's decode-run fast path against its per-step formula."""

from __future__ import annotations

import numpy as np
import pytest

from rllmsim.cost.features import BatchShape, StepFeatures
from rllmsim.cost.roofline import RooflineCostModel
from rllmsim.deployment import Deployment
from rllmsim.specs import load_gpu, load_model


@pytest.mark.parametrize("model, gpu, tp", [
    ("deepseek-r1-distill-qwen-7b", "h100-sxm", 1),
    ("qwen3-32b", "h100-sxm", 4),
    ("qwen3-30b-a3b", "a100-80gb", 2),  # MoE: the expert share depends on the token count
])
@pytest.mark.parametrize("tokens_per_seq", [1, 4])
def test_decode_run_matches_one_step_at_a_time(model: str, gpu: str, tp: int, tokens_per_seq: int) -> None:
    """A fast-forwarded run is costed in one call; every step must get exactly the seconds the
    general formula gives the same step described alone (fast-forward promises identical bits)."""
    roofline = RooflineCostModel(Deployment(model=load_model(model), gpu=load_gpu(gpu), tp=tp))
    contexts = [(37, 1000 * 37 + 41 * m) for m in range(50)] + [(1, 5 + m) for m in range(5)]
    for seqs, context in ((s, np.array([c for s2, c in contexts if s2 == s])) for s in (37, 1)):
        run = roofline.step_time(StepFeatures.decode_run(seqs, context, tokens_per_seq))
        one_by_one = [
            roofline.step_time(StepFeatures.from_shapes([BatchShape(
                decode_contexts=(int(c) - (seqs - 1) * 10,) + (10,) * (seqs - 1),
                decode_tokens_per_seq=tokens_per_seq)]))[0]
            for c in context
        ]
        assert run.tolist() == one_by_one


def test_one_step_equals_its_row_in_a_batch_of_steps() -> None:
    """A single step is costed with plain numbers, a table of steps with arrays: same bits."""
    roofline = RooflineCostModel(Deployment(model=load_model("qwen3-32b"), gpu=load_gpu("h100-sxm"), tp=2))
    rng = np.random.default_rng(7)
    shapes = [BatchShape(prefill_chunks=tuple((int(c), int(x)) for c, x in rng.integers(1, 4000, (rng.integers(0, 3), 2))),
                         decode_contexts=tuple(int(x) for x in rng.integers(1, 30000, rng.integers(0, 40))),
                         decode_tokens_per_seq=int(rng.integers(1, 5)))
              for _ in range(300)]
    table = roofline.step_time(StepFeatures.from_shapes(shapes))
    assert table.tolist() == [roofline.step_time(StepFeatures.from_shapes([s]))[0] for s in shapes]
