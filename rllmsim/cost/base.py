"""The cost-model interface shared by the roofline and the calibrated regression.

A cost model answers one question, vectorised: how long does each of these engine steps take on
one replica? It also says what it was made for (GPU, model, TP, dtypes), so the simulator can
refuse to apply a model measured on one deployment to another without being told to.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from rllmsim.cost.features import StepFeatures


@runtime_checkable
class CostModel(Protocol):
    """Step-time predictor for one replica of one deployment."""

    def step_time(self, features: StepFeatures) -> np.ndarray:
        """Seconds per step, one float64 per row of `features`; elementwise, never reducing
        across rows, so one step costs the same alone or inside a batch of steps."""
        ...

    def provenance(self) -> dict[str, Any]:
        """What this model is and where it came from, for every run's summary."""
        ...
