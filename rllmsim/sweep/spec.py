"""A sweep spec: a YAML grid over deployment fields x workload fields x seeds.

```yaml
name: r1-7b-rates               # optional label
seeds: [0, 1]                   # or `seed: 0`; one run per seed per grid point
deployment:                     # Deployment fields by their vLLM names, plus `router`
  model: deepseek-r1-distill-qwen-7b
  gpu: [h100-sxm, a100-80gb]    # a list is a grid axis, a scalar is fixed
  tp: [1, 2]
workload:                       # WorkloadSpec fields
  rate: [1, 2, 4, 8]
  dataset: math-500
  num_requests: 200
slos: {ttft_p99: 10s, tpot_p99: 80ms}   # optional: slo_ok column and goodput
duration_s: 1800                # optional, instead of num_requests: seconds of arrivals per run
```

Every run expands to one plain dict (`RunConfig`) with every field filled, so its key, a hash of
that dict, does not change when a spec spells a default out or reorders its axes. Mistakes a user
can make in the file (bad YAML, unknown sections or fields, wrong types, unknown GPU or model
names, an invalid workload) end in one `ConfigError` line that names the field; a deployment that
does not fit on its GPU is not a spec mistake but a failed run, recorded as such.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rllmsim import checks
from rllmsim.deployment import Deployment
from rllmsim.engine.router import parse_router
from rllmsim.errors import ConfigError
from rllmsim.file_checks import load_yaml
from rllmsim.simulation import WorkloadSpec
from rllmsim.specs import load_gpu, load_model
from rllmsim.sweep.slo import SLO, parse_slos

#: Bump when the meaning of a run config changes, so old results are not mistaken for new ones.
#: 2: `spec_acceptance_rate` became vLLM's accepted / drafted tokens (it was a per-position probability).
KEY_VERSION = 2

TOP_LEVEL = ("name", "description", "seed", "seeds", "deployment", "workload", "slos", "fast_forward",
             "straggler_factor", "duration_s")
#: Deployment fields a spec may set (the dataclass's, with model and gpu as catalog names) + router.
DEPLOYMENT_FIELDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Deployment)}
DEPLOYMENT_FIELDS["model"] = "str"
DEPLOYMENT_FIELDS["gpu"] = "str"
MODEL_FIELDS = tuple(k for k, v in DEPLOYMENT_FIELDS.items() if "ModelSpec" in v)  # e.g. draft_model
for _name in MODEL_FIELDS:  # given by catalog name in a spec
    DEPLOYMENT_FIELDS[_name] = "str | None"
DEPLOYMENT_FIELDS["router"] = "str"
WORKLOAD_FIELDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(WorkloadSpec)}
DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Deployment) if f.default is not dataclasses.MISSING}
DEPLOYMENT_DEFAULTS["router"] = "round-robin"
WORKLOAD_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(WorkloadSpec) if f.default is not dataclasses.MISSING}
DEFAULT_MODEL = "deepseek-r1-distill-qwen-7b"
DEFAULT_GPU = "h100-sxm"


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep: fixed values and axes per section, seeds, SLOs."""

    name: str
    deployment: dict[str, Any]
    workload: dict[str, Any]
    seeds: tuple[int, ...] = (0,)
    slos: tuple[SLO, ...] = ()
    fast_forward: bool = True
    straggler_factor: float = 3.0
    description: str = ""
    axes: tuple[str, ...] = field(default=())
    duration_s: float | None = None

    def expand(self) -> list[dict[str, Any]]:
        """Every run of the grid, in a stable order (first axis outermost, seeds innermost)."""
        sections = [("deployment", k, v) for k, v in self.deployment.items()] + \
                   [("workload", k, v) for k, v in self.workload.items()]
        choices = [v if isinstance(v, list) else [v] for _, _, v in sections]
        runs = []
        for combo in itertools.product(*choices):
            dep = {k: v for (sec, k, _), v in zip(sections, combo) if sec == "deployment"}
            work = {k: v for (sec, k, _), v in zip(sections, combo) if sec == "workload"}
            if self.duration_s is not None:  # as many requests as the rate sends in duration_s
                rate = work.get("rate", WORKLOAD_DEFAULTS["rate"])
                work["num_requests"] = max(1, math.ceil(rate * self.duration_s)) if math.isfinite(rate) \
                    else WORKLOAD_DEFAULTS["num_requests"]
            for seed in self.seeds:
                runs.append(make_run_config(dep, work, seed, self.slos, self.fast_forward, self.straggler_factor))
        for index, run in enumerate(runs):
            run["index"] = index
        return runs


def make_run_config(deployment: dict[str, Any], workload: dict[str, Any], seed: int,
                    slos: tuple[SLO, ...] = (), fast_forward: bool = True,
                    straggler_factor: float = 3.0) -> dict[str, Any]:
    """One run, every field filled, with its key. Plain types only: it travels to workers."""
    dep = dict(DEPLOYMENT_DEFAULTS)
    dep.setdefault("model", DEFAULT_MODEL)
    dep.setdefault("gpu", DEFAULT_GPU)
    dep.update(deployment)
    if dep.get("quantization") in ("", "none"):
        dep["quantization"] = None
    dep["gpu"] = load_gpu(dep["gpu"]).name  # aliases ("h100") and catalog names share a key
    work = normalize_workload(workload)
    run = {
        "deployment": dep,
        "workload": work,
        "seed": int(seed),
        "slos": [slo.to_dict() for slo in slos],
        "fast_forward": bool(fast_forward),
        "straggler_factor": float(straggler_factor),
    }
    run["key"] = run_key(run)
    return run


def normalize_workload(fields: dict[str, Any]) -> dict[str, Any]:
    """A WorkloadSpec's full field dict, built (and so validated) from the given fields."""
    fields = dict(fields)
    if fields.get("trace"):
        fields["arrival"] = "trace"
    if fields.get("burstiness") is not None and "cv" not in fields:
        fields["cv"] = None
    if fields.get("cv") is not None and fields.get("burstiness") is not None:
        raise ConfigError("workload: give cv or burstiness, not both (burstiness = 1/cv^2)")
    return WorkloadSpec(**fields).to_dict()


def run_key(run: dict[str, Any]) -> str:
    """A stable hash of everything that determines a run's result (not its grid position).

    Fields at their dataclass default are left out, so a spec that spells a default out, and a
    newer rllmsim whose Deployment or WorkloadSpec gained a field, give the same keys: a sweep
    resumes across upgrades instead of starting over.
    """
    def explicit(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}

    payload = {k: run[k] for k in ("seed", "slos", "fast_forward", "straggler_factor")}
    payload["deployment"] = explicit(run["deployment"], DEPLOYMENT_DEFAULTS)
    payload["workload"] = explicit(run["workload"], WORKLOAD_DEFAULTS)
    payload["version"] = KEY_VERSION
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- parsing -------------------------------------------------------------------------------------

def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"sweep spec {path}: cannot read it ({err.strerror})") from None
    return parse_spec(text, name=path.stem)


def parse_spec(text: str, name: str = "sweep") -> SweepSpec:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"sweep spec: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError("sweep spec: the file must be a mapping with `deployment:` and `workload:` sections")
    _check_keys(data, TOP_LEVEL, "sweep spec", "top-level key")
    deployment = _section(data, "deployment", DEPLOYMENT_FIELDS)
    workload = _section(data, "workload", WORKLOAD_FIELDS)
    if "seed" in data and "seeds" in data:
        raise ConfigError("sweep spec: give `seed` or `seeds`, not both")
    seeds_value = data.get("seeds", data.get("seed", 0))
    seeds = seeds_value if isinstance(seeds_value, list) else [seeds_value]
    seeds = [_coerce(s, "int", "seeds") for s in seeds]
    if not seeds:
        raise ConfigError("sweep spec seeds: give at least one seed")
    slos_value = data.get("slos") or {}
    if not isinstance(slos_value, dict):
        raise ConfigError("sweep spec slos: give a mapping such as {ttft_p99: 10s, tpot_p99: 80ms}")
    slos = parse_slos([f"{k}={v}" for k, v in slos_value.items()], where="sweep spec slos")
    duration = data.get("duration_s")
    if duration is not None:
        duration = _coerce(duration, "float", "duration_s")
        if not duration > 0:
            raise ConfigError(f"sweep spec duration_s: must be > 0 seconds, got {duration}")
        if "num_requests" in workload:
            raise ConfigError("sweep spec: give workload.num_requests or duration_s, not both")
        arrivals = workload.get("arrival", "gamma")
        if set(arrivals if isinstance(arrivals, list) else [arrivals]) - {"poisson", "gamma", "constant"} \
                or workload.get("trace"):
            raise ConfigError("sweep spec duration_s: only for open-loop arrivals (poisson, gamma, constant)")
    spec = SweepSpec(
        name=str(data.get("name") or name),
        deployment=deployment,
        workload=workload,
        seeds=tuple(seeds),
        slos=tuple(slos),
        fast_forward=_coerce(data.get("fast_forward", True), "bool", "fast_forward"),
        straggler_factor=_coerce(data.get("straggler_factor", 3.0), "float", "straggler_factor"),
        description=str(data.get("description") or ""),
        axes=tuple(k for k, v in {**deployment, **workload}.items() if isinstance(v, list)),
        duration_s=duration,
    )
    _validate_names(spec)
    return spec


def _section(data: dict[str, Any], section: str, fields: dict[str, str]) -> dict[str, Any]:
    values = data.get(section) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"sweep spec {section}: must be a mapping of field: value or field: [values]")
    _check_keys(values, tuple(fields), f"sweep spec {section}", "field")
    out: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{section}.{key}"
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"sweep spec {where}: an empty list gives no runs; drop the field or add values")
            out[key] = [_coerce(v, fields[key], where) for v in value]
            if len(set(map(repr, out[key]))) != len(out[key]):
                raise ConfigError(f"sweep spec {where}: repeated values {value}")
        elif isinstance(value, dict):
            raise ConfigError(f"sweep spec {where}: expected a value or a list of values, got a mapping")
        else:
            out[key] = _coerce(value, fields[key], where)
    return out


def _check_keys(mapping: dict[str, Any], known: tuple[str, ...], where: str, what: str) -> None:
    for key in mapping:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown {what} {key!r}{hint}")


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Check a YAML scalar against a dataclass annotation such as 'int | None'."""
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ConfigError(f"sweep spec {where}: must not be null")
    base = kinds[0]
    if base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # "inf" for rate
            except ValueError:
                pass
    elif base == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a new dataclass field with an unusual type
        return value
    raise ConfigError(f"sweep spec {where}: expected {base}, got {value!r}")


def _values(value: Any) -> list[Any]:
    """A grid entry's values: a list as given, a scalar as one, unset as none."""
    return value if isinstance(value, list) else [] if value is None else [value]


def _validate_names(spec: SweepSpec) -> None:
    """Catalog names, value ranges and workloads are spec mistakes, caught before any run starts."""
    checks.engine_fields(spec.deployment, "sweep spec deployment.")
    for value in _values(spec.deployment.get("quantization")):
        checks.quantization(value, "sweep spec deployment.quantization")
    for value in _values(spec.deployment.get("kv_cache_dtype")):
        checks.kv_cache_dtype(value, "sweep spec deployment.kv_cache_dtype")
    for value in spec.seeds:
        checks.seed(value, "sweep spec seeds")
    checks.straggler_factor(spec.straggler_factor, "sweep spec straggler_factor")
    for key, loader in [("model", load_model), ("gpu", load_gpu)] + [(k, load_model) for k in MODEL_FIELDS]:
        values = spec.deployment.get(key, [])
        for value in values if isinstance(values, list) else [values]:
            if value is None:
                continue
            try:
                loader(value)
            except ConfigError as err:
                raise ConfigError(f"sweep spec deployment.{key}: {err}") from None
    routers = spec.deployment.get("router", [])
    for value in routers if isinstance(routers, list) else [routers]:
        try:
            parse_router(value)  # a name, or a cache-aware router with its weights (kv-aware:prefix=2)
        except ConfigError as err:
            raise ConfigError(f"sweep spec deployment.router: {err}") from None
    axes = [(k, v if isinstance(v, list) else [v]) for k, v in spec.workload.items()]
    for combo in itertools.product(*(v for _, v in axes)):
        try:
            normalize_workload(dict(zip((k for k, _ in axes), combo)))
        except ConfigError as err:
            raise ConfigError(f"sweep spec workload: {err}") from None
        except TypeError as err:  # pragma: no cover - defensive
            raise ConfigError(f"sweep spec workload: {err}") from None
