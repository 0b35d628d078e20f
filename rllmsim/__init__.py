"""rllmsim: a calibrated discrete-event simulator for serving reasoning LLMs on vLLM.

    import rllmsim
    run = rllmsim.simulate(model="deepseek-r1-distill-qwen-7b", gpu="h100-sxm", rate=2, dataset="aime-2024")
    run  # in Jupyter: the headline metrics; run.summary, run.requests, run.timeline, run.save(dir)

The API (`simulate`, `compare`, `plan`, `validate`, `Run`, `ConfigError`; see docs/api.md) is
loaded on first attribute access through the module-level `__getattr__` below, not at import:
the API pulls in pandas, numpy and the engine, and `import rllmsim` must stay cheap for the CLI's
start-up and for `rllmsim.__version__`. `compare` and `validate` are also subpackages; the
subpackage modules are callable (`rllmsim.api.callable_module`), so `rllmsim.compare(...)` runs a
comparison whether or not the subpackage was imported first.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "simulate": ("rllmsim.api.simulate", "simulate"),
    "plan": ("rllmsim.api.plan", "plan"),
    "Run": ("rllmsim.api.run", "Run"),
    "ConfigError": ("rllmsim.errors", "ConfigError"),
    "compare": ("rllmsim.compare", None),
    "validate": ("rllmsim.validate", None),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'rllmsim' has no attribute {name!r}")
    module, attribute = _API[name]
    loaded = importlib.import_module(module)
    return loaded if attribute is None else getattr(loaded, attribute)


def __dir__() -> list[str]:
    """Tab completion in a notebook lists the API before it is loaded."""
    return sorted({*globals(), *_API})
