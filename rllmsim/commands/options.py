"""Click options shared by every command that builds a deployment or a workload.

Flag names follow `vllm serve` and `vllm bench serve`, so users can paste what they run today.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from rllmsim.commands.pd_options import PD_OPTIONS
from rllmsim.deployment import DEFAULT_VLLM_VERSION, Deployment
from rllmsim.engine.acceptance import DEFAULT_ACCEPTANCE_SPREAD
from rllmsim.engine.router import ROUTERS, parse_router
from rllmsim import checks
from rllmsim.errors import ConfigError
from rllmsim.simulation import CLOSED, WorkloadSpec
from rllmsim.spec_decode import METHOD_ALIASES, METHOD_NAMES, SPECULATIVE_METHODS
from rllmsim.specs import GPUSpec, ModelSpec, load_gpu, load_model
from rllmsim.workload.traces import bench_model_id


class RouterSpec(click.ParamType):
    """--router checked when parsed (by the CLI and by the API's keywords alike), so a bad name or
    weight is one line before anything is built."""

    name = "router"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        parse_router(value)
        return str(value)


DEFAULT_MODEL = "deepseek-r1-distill-qwen-7b"
DEFAULT_GPU = "h100-sxm"

_DEPLOYMENT_OPTIONS = [
    click.option("--model", default=None,
                 help=f"Catalog name, HF id, or a path to a config.json (see `rllmsim list models`; default "
                 f"{DEFAULT_MODEL}, or the model_id of a --trace vllm bench result when the catalog has it)."),
    click.option("--gpu", default=DEFAULT_GPU, show_default=True, help="GPU catalog name (see `rllmsim list gpus`)."),
    click.option("--tp", "--tensor-parallel-size", "tp", type=int, default=1, show_default=True),
    click.option("--replicas", type=int, default=1, show_default=True),
    click.option("--data-parallel-size", "-dp", "data_parallel_size", type=int, default=1, show_default=True,
                 help="Engine cores per replica (vLLM's DP ranks), each with its own scheduler and KV cache; "
                 "with a MoE model they step together and share the experts."),
    click.option("--pipeline-parallel-size", "-pp", "pipeline_parallel_size", type=int, default=1, show_default=True,
                 help="Pipeline stages per engine core, each on its own TP group; up to this many micro-batches "
                 "are in flight."),
    click.option("--quantization", default=None, help="Weight quantization: fp8, int8, awq, gptq."),
    click.option("--enable-migration/--no-enable-migration", "enable_migration", default=False, show_default=True,
                 help="Llumnix-style live migration: a replica under KV pressure moves its newest decode to "
                 "the roomiest replica."),
    click.option("--migration-interval-s", type=float, default=0.1, show_default=True,
                 help="How often the migration policy looks at the replicas."),
    click.option("--kv-offloading-size", type=float, default=None,
                 help="GiB of host memory for a CPU KV tier (over all TP ranks): freed and preempted blocks "
                 "are kept there and loaded back over PCIe instead of recomputed."),
    click.option("--kv-offloading-backend", type=click.Choice(["native", "lmcache"]), default="native",
                 show_default=True, help="vLLM's offloading connector, or LMCache (prompt KV only, 256-token chunks)."),
    click.option("--kv-cache-dtype", default="auto", show_default=True),
    click.option("--max-num-seqs", type=int, default=None, help="Default as vllm serve picks for the GPU."),
    click.option("--max-num-batched-tokens", type=int, default=None),
    click.option("--max-model-len", type=int, default=None),
    click.option("--gpu-memory-utilization", type=float, default=0.9, show_default=True),
    click.option("--block-size", type=int, default=16, show_default=True),
    click.option("--enable-chunked-prefill/--no-enable-chunked-prefill", default=True, show_default=True),
    click.option("--num-gpu-blocks-override", type=int, default=None),
    click.option("--enable-prefix-caching/--no-enable-prefix-caching", default=True, show_default=True,
                 help="vLLM v1 enables it by default."),
    click.option("--scheduler-reserve-full-isl/--no-scheduler-reserve-full-isl", "scheduler_reserve_full_isl",
                 default=None, help="Admit a waiting or preempted request only when the KV cache holds its whole "
                 "prompt, not just its first chunk (default: as the vLLM version does, on from 0.19)."),
    click.option("--speculative-method", type=click.Choice(list(METHOD_NAMES)), default=None,
                 help="Speculative decoding proposer, as vLLM names it (draft = draft_model, deepseek_mtp = mtp)."),
    click.option("--num-speculative-tokens", type=int, default=None,
                 help="Tokens proposed per step (k); default 4, for mtp the model's MTP layers as vLLM does."),
    click.option("--acceptance-rate", "spec_acceptance_rate", type=float, default=None,
                 help="vLLM's 'Draft acceptance rate': accepted / drafted tokens (default 0.7)."),
    click.option("--mean-acceptance-length", "spec_mean_acceptance_length", type=float, default=None,
                 help="vLLM's 'Mean acceptance length' (1 + rate x k), instead of --acceptance-rate."),
    click.option("--acceptance-spread", "spec_acceptance_spread", type=float, default=DEFAULT_ACCEPTANCE_SPREAD,
                 show_default=True, help="Per-request variation of the rate: Beta variance / (m(1-m)); 0: all alike."),
    click.option("--draft-model", default=None, help="Draft model for --speculative-method draft."),
    click.option("--vllm-version", default=DEFAULT_VLLM_VERSION, show_default=True,
                 help="The vLLM release whose defaults apply (async scheduling is on from 0.14)."),
    click.option("--async-scheduling/--no-async-scheduling", "async_scheduling", default=None,
                 help="Overlap host work with the GPU step (default: as the vLLM version does)."),
    click.option("--enforce-eager", is_flag=True, help="No CUDA graphs: every step launches its kernels."),
    click.option("--disable-custom-all-reduce", is_flag=True, help="TP all-reduces through NCCL only."),
    click.option("--enable-expert-parallel", is_flag=True,
                 help="MoE: each of the DP x TP GPUs holds whole experts (expert parallelism) instead of a slice of every expert."),
    click.option("--router", default="round-robin", show_default=True, type=RouterSpec(),
                 help=f"{', '.join(ROUTERS)}; the cache-aware ones take weights, as in "
                 "kv-aware:prefix=3,kv=2,queue=2 or dynamo-kv:overlap=1 (docs/architectures.md)."),
    *PD_OPTIONS,
]

_WORKLOAD_OPTIONS = [
    click.option("--arrival", default="gamma", show_default=True,
                 help="poisson, gamma, constant, closed-loop, batch-waves, trace, or servegen (production DeepSeek-R1 pool)."),
    click.option("--rate", "--request-rate", "rate", type=float, default=1.5, show_default=True,
                 help="Requests per second (open loop)."),
    click.option("--cv", type=float, default=None, help="Coefficient of variation of gaps (gamma; default 2)."),
    click.option("--burstiness", type=float, default=None, help="vllm bench serve's gamma shape (= 1/cv^2)."),
    click.option("--dataset", default="math-500", show_default=True,
                 help="Length distribution, or a mix like math-500:0.5,aime-2024:0.5."),
    click.option("--lengths-file", default=None, help="CSV/JSONL/Parquet of (prompt, output) lengths to resample."),
    click.option("--max-tokens", type=int, default=32768, show_default=True, help="Token budget per request."),
    click.option("--reasoning-budget", type=int, default=None, help="Thinking budget: reasoning tokens per request (the answer follows)."),
    click.option("--servegen-start", "servegen_start_s", type=float, default=None,
                 help="--arrival servegen: replay the pool's day in order from this many seconds in (default: the whole day's pool, stationary)."),
    click.option("--num-requests", "--num-prompts", "num_requests", type=int, default=300, show_default=True),
    click.option("--concurrency", type=int, default=None,
                 help="Users (closed-loop) or batch size (batch-waves); default 16."),
    click.option("--max-concurrency", type=int, default=None,
                 help="As vllm bench serve: at most this many requests in flight, the rest wait in the "
                 "client (open loop; default no cap). With closed-loop: the number of users."),
    click.option("--think-time", "think_time_s", type=float, default=0.0, show_default=True,
                 help="Seconds a user waits after a reply before sending the next request (closed-loop, --turns)."),
    click.option("--turns", type=int, default=1, show_default=True,
                 help="Turns per conversation: each open-loop arrival starts one, each later turn's prompt "
                 "carries the previous prompt and answer (docs/architectures.md)."),
    click.option("--trace", default=None, help="Replay a trace file (implies --arrival trace)."),
    click.option("--trace-format", default="auto", show_default=True),
    click.option("--time-scale", type=float, default=1.0, show_default=True,
                 help="Multiply trace times: 0.5 replays twice as fast."),
    click.option("--shared-prefix-tokens", type=int, default=0, show_default=True,
                 help="Tokens of a shared prefix (system prompt, few-shot) before every prompt."),
    click.option("--prefix-groups", type=int, default=1, show_default=True,
                 help="Distinct shared prefixes, one drawn per request."),
]


def _stack(options: list) -> Callable:
    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


deployment_options = _stack(_DEPLOYMENT_OPTIONS)
workload_options = _stack(_WORKLOAD_OPTIONS)

DEPLOYMENT_KEYS = ("tp", "replicas", "quantization", "kv_cache_dtype", "max_num_seqs", "max_num_batched_tokens",
                   "max_model_len", "gpu_memory_utilization", "block_size", "enable_chunked_prefill",
                   "num_gpu_blocks_override", "enable_prefix_caching", "scheduler_reserve_full_isl",
                   "vllm_version", "async_scheduling", "enforce_eager", "disable_custom_all_reduce",
                   "enable_expert_parallel", "data_parallel_size", "pipeline_parallel_size",
                   "kv_offloading_size", "kv_offloading_backend", "enable_migration", "migration_interval_s",
                   "speculative_method", "spec_acceptance_rate", "spec_mean_acceptance_length",
                   "spec_acceptance_spread")
WORKLOAD_KEYS = ("arrival", "rate", "cv", "burstiness", "dataset", "lengths_file", "max_tokens", "num_requests",
                 "concurrency", "max_concurrency", "think_time_s", "trace", "trace_format", "time_scale", "shared_prefix_tokens",
                 "prefix_groups", "reasoning_budget", "servegen_start_s", "turns")


def deployment_from_options(opts: dict[str, Any], model: ModelSpec | None = None,
                            gpu: GPUSpec | None = None) -> Deployment:
    """The deployment the options describe; `model`/`gpu` stand in for --model/--gpu when given."""
    quantization = opts.get("quantization")
    fields = {k: opts[k] for k in DEPLOYMENT_KEYS if k in opts}
    fields["quantization"] = None if quantization in (None, "", "none") else quantization
    model = model or load_model(opts.get("model") or DEFAULT_MODEL)
    method = opts.get("speculative_method")
    if method:
        default_k = (model.num_mtp_layers or 1) if METHOD_ALIASES.get(method, method) == "mtp" else 4
        fields["num_speculative_tokens"] = opts.get("num_speculative_tokens") or default_k
    elif opts.get("num_speculative_tokens"):
        raise ConfigError(f"--num-speculative-tokens needs --speculative-method {'|'.join(SPECULATIVE_METHODS)}")
    if opts.get("draft_model"):
        fields["draft_model"] = load_model(opts["draft_model"])
    return Deployment(model=model, gpu=gpu or load_gpu(opts["gpu"]), **fields)


def with_trace_model(opts: dict[str, Any]) -> dict[str, Any]:
    """`opts` with --model resolved: as given, else the model_id a --trace vllm bench result
    records when the catalog resolves it (replaying a benchmark simulates the model it measured),
    else the default. One warning line on stderr when the two disagree or the id is unknown."""
    given, trace = opts.get("model"), opts.get("trace")
    recorded = bench_model_id(trace) if trace else None
    if recorded is None:
        return {**opts, "model": given or DEFAULT_MODEL}
    if given is None:
        try:
            load_model(recorded)
            return {**opts, "model": recorded}
        except ConfigError:
            click.echo(f"warning: --trace {trace} records model_id {recorded!r}, which the catalog does not "
                       f"resolve; simulating {DEFAULT_MODEL} (give --model to choose)", err=True)
            return {**opts, "model": DEFAULT_MODEL}
    if _model_key(given) != _model_key(recorded):
        click.echo(f"warning: --model {given} differs from model_id {recorded!r} recorded in --trace {trace}; "
                   f"simulating --model {given}", err=True)
    return opts


def _model_key(name: str) -> str:
    """Catalog name when `name` resolves (an HF id and its catalog name agree), else as written."""
    try:
        return load_model(name).name
    except ConfigError:
        return name.lower()


def workload_from_options(opts: dict[str, Any]) -> WorkloadSpec:
    fields = {k: opts[k] for k in WORKLOAD_KEYS if k in opts}
    for name in ("concurrency", "max_concurrency"):  # None: not given
        if fields.get(name) is None:
            fields.pop(name, None)
    if fields.get("trace"):
        fields["arrival"] = "trace"
    _concurrency_fields(fields)
    if fields.get("arrival") == "gamma" and fields.get("cv") is None and fields.get("burstiness") is None:
        fields["cv"] = 2.0
    if fields.get("cv") is not None and fields.get("burstiness") is not None:
        raise ConfigError("give --cv or --burstiness, not both (burstiness = 1/cv^2)")
    return WorkloadSpec(**fields)


def _concurrency_fields(fields: dict[str, Any]) -> None:
    """--concurrency counts closed-loop users and batch-wave sizes; --max-concurrency is vllm
    bench serve's cap, which for closed-loop is the same number (request rate inf, C in flight)."""
    closed = fields.get("arrival") in CLOSED
    if "concurrency" in fields and not closed:
        raise ConfigError(f"--concurrency counts closed-loop users or batch-waves; for --arrival "
                          f"{fields.get('arrival', 'gamma')} cap requests in flight with --max-concurrency")
    if fields.get("arrival") == "closed-loop" and "max_concurrency" in fields:
        fields.setdefault("concurrency", fields["max_concurrency"])


def parse_goodput(items: tuple[str, ...]) -> dict[str, float]:
    """vllm bench serve's `--goodput ttft:500 tpot:50` (milliseconds) -> seconds by metric."""
    slos: dict[str, float] = {}
    for item in items:
        for part in item.split():
            name, _, value = part.partition(":")
            name = name.strip().lower()
            if name not in ("ttft", "tpot", "e2el"):
                raise ConfigError(f"--goodput {part!r}: metric must be ttft, tpot or e2el, as in ttft:500")
            try:
                slos[name] = float(value) / 1e3
            except ValueError:
                raise ConfigError(f"--goodput {part!r}: give milliseconds, as in {name}:500") from None
    return dict(checks.slo_limits(slos))
