"""`rllmsim.simulate(...)`: one workload on one deployment, from keywords named as the CLI's flags.

This is where a simulation's inputs are resolved (options -> deployment, workload, SLOs, cost
model), for the Python API and for `rllmsim simulate`, which calls `prepare` and `Simulation.run`.
The cost model: `auto`, `roofline` and `kernels` need only the deployment; a kernel correction
(`rllmsim calibrate --on kernels`) times any model on its GPU, which is the deployment's GPU unless
`gpu` is given; a regression calibration fills in what the caller left unset (model, device, KV
pool, engine limits) from the engine it was measured on, and refuses a mismatch unless
`allow_extrapolation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from rllmsim import checks
from rllmsim.api import kwargs
from rllmsim.api.run import Run
from rllmsim.commands.options import deployment_from_options, parse_goodput, with_trace_model, workload_from_options
from rllmsim.cost.base import CostModel
from rllmsim.cost.select import KINDS, cost_model_for
from rllmsim.deployment import Deployment
from rllmsim.disaggregation import OPTION_NAMES as PD_OPTION_NAMES, Disaggregation, disaggregation_from_options
from rllmsim.engine.disaggregated import PoolCostModels, pool_cost_models
from rllmsim.errors import ConfigError
from rllmsim.metrics.stragglers import DEFAULT_FACTOR
from rllmsim.simulation import WorkloadSpec, run_simulation
from rllmsim.specs import GPUSpec, ModelSpec

#: simulate()'s own keywords, besides the deployment and workload options.
OWN_KEYWORDS = ("deployment", "workload", "seed", "cost_model", "kernel_tables", "allow_extrapolation",
                "step_by_step", "goodput", "straggler_factor")

Goodput = str | Iterable[str] | Mapping[str, float] | None


@dataclass
class Simulation:
    """A resolved simulation, not yet run: what `prepare` built, for a look before `run()`."""

    deployment: Deployment
    workload: WorkloadSpec | pd.DataFrame
    cost_model: CostModel | PoolCostModels
    seed: int = 0
    router: str = "round-robin"
    fast_forward: bool = True
    slos_s: Mapping[str, float] | None = None
    straggler_factor: float = DEFAULT_FACTOR
    disaggregation: Disaggregation | None = None  # prefill and decode pools instead of `deployment.replicas`

    def run(self) -> Run:
        output = run_simulation(self.deployment, self.workload, seed=self.seed, cost_model=self.cost_model,
                                router=self.router, fast_forward=self.fast_forward, slos_s=self.slos_s,
                                straggler_factor=self.straggler_factor, disaggregation=self.disaggregation)
        return Run(output, self.deployment)


def simulate(*, deployment: Deployment | None = None, workload: WorkloadSpec | pd.DataFrame | None = None,
             seed: int = 0, cost_model: str | Path | CostModel = "auto", kernel_tables: str | Path | None = None,
             allow_extrapolation: bool = False, step_by_step: bool = False, goodput: Goodput = None,
             straggler_factor: float = DEFAULT_FACTOR, **options: Any) -> Run:
    """Simulate serving a workload and return the `Run`.

    `options` are the flags of `rllmsim simulate` as keywords, vLLM's names: model (a catalog name,
    HF id, config.json path or a `ModelSpec`), gpu (a name or a `GPUSpec`), tp /
    tensor_parallel_size, max_num_seqs, quantization, kv_cache_dtype, enable_prefix_caching,
    speculative_method, ..., arrival, rate, num_requests, concurrency, dataset, max_tokens, ...
    `deployment=` or `workload=` give a ready `Deployment` / `WorkloadSpec` (or request table)
    instead of those options. `cost_model`: auto, roofline, kernels, a calibration JSON or a
    `CostModel`. `goodput`: SLOs in ms, `{"ttft": 500, "tpot": 50}` or "ttft:500 tpot:50".
    """
    return prepare(deployment=deployment, workload=workload, seed=seed, cost_model=cost_model,
                   kernel_tables=kernel_tables, allow_extrapolation=allow_extrapolation, step_by_step=step_by_step,
                   goodput=goodput, straggler_factor=straggler_factor, **options).run()


def prepare(*, deployment: Deployment | None = None, workload: WorkloadSpec | pd.DataFrame | None = None,
            seed: int = 0, cost_model: str | Path | CostModel = "auto", kernel_tables: str | Path | None = None,
            allow_extrapolation: bool = False, step_by_step: bool = False, goodput: Goodput = None,
            straggler_factor: float = DEFAULT_FACTOR, **options: Any) -> Simulation:
    """Resolve `simulate`'s keywords (see there) into a `Simulation`, checking them all first."""
    checks.seed(seed)
    checks.straggler_factor(straggler_factor)
    given = kwargs.resolve("simulate()", options, extra=OWN_KEYWORDS)
    opts = with_trace_model({**kwargs.defaults(), **given})
    if deployment is not None:
        refuse("simulate", "deployment", given, set(kwargs.names("deployment")) - {"router", *PD_OPTION_NAMES})
        timing = _cost_model_of(deployment, cost_model, allow_extrapolation, kernel_tables)
    else:
        deployment, timing = deployment_and_cost_model(opts, set(given), cost_model, allow_extrapolation,
                                                      kernel_tables)
    if workload is None:
        workload = workload_from_options(opts)
    else:
        refuse("simulate", "workload", given, kwargs.names("workload"))
    slos = parse_goodput(kwargs.goodput_items(goodput))
    disaggregation = disaggregation_from_options(opts, deployment)
    if disaggregation is not None:
        timing = _pool_cost_models(disaggregation, cost_model, kernel_tables)
    return Simulation(deployment, workload, timing, seed=seed, router=opts["router"], fast_forward=not step_by_step,
                      slos_s=slos, straggler_factor=straggler_factor, disaggregation=disaggregation)


def _pool_cost_models(pools: Disaggregation, cost_model: str | Path | CostModel,
                      kernel_tables: str | Path | None) -> PoolCostModels:
    """Disaggregated pools each get the cost model `cost_model` names for their GPU and TP; a
    calibration is measured on one engine, so it cannot time two pools."""
    if isinstance(cost_model, CostModel):
        return pool_cost_models(pools, cost_model)
    kind = _kind(cost_model)
    if kind not in KINDS:
        raise ConfigError(f"--cost-model {cost_model}: disaggregated pools are timed with "
                          f"{', '.join(KINDS)}, not a calibration of one engine; drop --cost-model or the pool flags")
    return pool_cost_models(pools, None, kind, kernel_tables)


def deployment_and_cost_model(opts: dict[str, Any], given: set[str], cost_model: str | Path | CostModel,
                              allow_extrapolation: bool = False,
                              kernel_tables: str | Path | None = None) -> tuple[Deployment, CostModel]:
    """The deployment `opts` describe and its cost model; `given` names the options the caller set
    (a regression calibration supplies the rest)."""
    from rllmsim.cost.calibrated import calibrated_setup
    from rllmsim.cost.kernel_calibration import load_kernel_correction

    if isinstance(cost_model, CostModel) or _kind(cost_model) in KINDS:
        deployment = deployment_of(opts)
        return deployment, _cost_model_of(deployment, cost_model, allow_extrapolation, kernel_tables)
    path = str(cost_model)
    correction = load_kernel_correction(path)
    if correction is not None:  # any model on the corrected GPU: the options describe the deployment
        deployment = deployment_of(opts if "gpu" in given else {**opts, "gpu": correction.gpu})
        return deployment, correction.cost_model(deployment, allow_extrapolation, kernel_tables)
    setup = calibrated_setup(path, _name(opts["model"]) if "model" in given else None,
                             _name(opts["gpu"]) if "gpu" in given else None)
    opts = {**opts, **{k: v for k, v in setup.engine_defaults.items() if k not in given}}
    deployment = deployment_of(opts, model=setup.model, gpu=setup.gpu)
    _check_calibration(setup.cost_model, deployment, allow_extrapolation)
    return deployment, setup.cost_model


def deployment_of(opts: Mapping[str, Any], model: ModelSpec | None = None, gpu: GPUSpec | None = None) -> Deployment:
    """`deployment_from_options`, where `opts["model"]`/`opts["gpu"]` may also be spec objects
    (which win over `model`/`gpu`, the specs a calibration resolved)."""
    given_model, given_gpu = (opts[k] if isinstance(opts[k], (ModelSpec, GPUSpec)) else None for k in ("model", "gpu"))
    return deployment_from_options(dict(opts), model=given_model or model, gpu=given_gpu or gpu)


def _cost_model_of(deployment: Deployment, cost_model: str | Path | CostModel, allow_extrapolation: bool,
                   kernel_tables: str | Path | None) -> CostModel:
    """The cost model `cost_model` names for a deployment that is fixed (nothing of it is filled in)."""
    from rllmsim.cost.kernel_calibration import load_kernel_correction
    from rllmsim.cost.regression import RegressionCostModel

    if isinstance(cost_model, CostModel):
        return cost_model
    path = _kind(cost_model)
    if path in KINDS:
        return cost_model_for(deployment, path, kernel_tables)
    correction = load_kernel_correction(path)
    if correction is not None:
        return correction.cost_model(deployment, allow_extrapolation, kernel_tables)
    model = RegressionCostModel.load(path)
    _check_calibration(model, deployment, allow_extrapolation)
    return model


def _check_calibration(model: CostModel, deployment: Deployment, allow_extrapolation: bool) -> None:
    model.check_matches(deployment.model.name, deployment.tp, model.metadata.get("dtype", "auto"),
                        deployment.kv_cache_dtype, allow_extrapolation=allow_extrapolation)


def _kind(cost_model: str | Path) -> str:
    return checks.cost_model_arg(str(cost_model), KINDS, "cost_model")


def _name(spec: str | ModelSpec | GPUSpec) -> str:
    return spec if isinstance(spec, str) else spec.name


def refuse(function: str, ready: str, given: Mapping[str, Any], names: Iterable[str]) -> None:
    """A ready `deployment=`/`workload=` and the options it replaces are not both given."""
    clash = sorted(set(given) & set(names))
    if clash:
        raise ConfigError(f"{function}(): {ready}= is a ready {ready}; drop {', '.join(clash)} "
                          f"or give them instead of {ready}=")
