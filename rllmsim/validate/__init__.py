"""Validation: replay recorded real vLLM runs through the simulator and measure the distance.

Readers turn each recorded format into a `RecordedRun` (LLMServingSim folders, `vllm bench serve`
results) or closed-loop cases (aiconfigurator silicon CSV); `replay.validate` simulates the exact
requests and `compare` builds the error tables; `diagnose` explains large errors; `plots` draws
real against simulated KV usage and latency CDFs.

Calling the package, `rllmsim.validate(RUN, ...)`, runs `rllmsim.api.validate.validate`.
"""

from rllmsim.api.callable_module import make_callable

make_callable(__name__, "rllmsim.api.validate:validate")
