"""`rllmsim profile MODEL`: measure a real vLLM engine over a grid of batch shapes."""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import click

from rllmsim.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str | None) -> int | None:
    """'1GiB', '512MiB', '2G', '1073741824' -> bytes (powers of 1024 for any suffix)."""
    if text is None:
        return None
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(f"--kv-cache-memory: cannot read {text!r} as a size (e.g. 1GiB)")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024 ** power)


def parse_engine_args(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--engine-arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@click.command("profile")
@click.argument("model")
@click.option("--name", help="Profile name (default: <model>-<grid>).")
@click.option("--out", "out_dir", default="profiles", show_default=True,
              type=click.Path(file_okay=False), help="Directory for <name>.parquet/.json.")
@click.option("--grid", default="cpu", show_default=True,
              help="Grid preset: ci (tiny, ~1 min on CPU), cpu (shipped), gpu (7B on one GPU).")
@click.option("--prefill-lens", help="Override: prompt lengths, e.g. 64,256,1024.")
@click.option("--prefill-counts", help="Override: prompts per prefill step, e.g. 1,4.")
@click.option("--decode-batches", help="Override: decode batch sizes, e.g. 1,8,64.")
@click.option("--decode-contexts", help="Override: decode context lengths, e.g. 512,4096.")
@click.option("--mixed-chunks", help="Override: prefill chunk sizes added to decode batches.")
@click.option("--repetitions", type=int, help="Override: repetitions per prefill/mixed shape.")
@click.option("--decode-steps", type=int, help="Override: measured steps per decode cell.")
@click.option("--warmup-steps", type=int, help="Override: unmeasured steps per decode cell.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dtype", default="auto", show_default=True,
              help="Model dtype; auto = float32 on CPU, the model's dtype on GPU.")
@click.option("--tp", "tensor_parallel_size", type=int, default=1, show_default=True)
@click.option("--kv-cache-dtype", default="auto", show_default=True)
@click.option("--block-size", type=int, help="KV block size (default: vLLM's platform default).")
@click.option("--max-num-batched-tokens", type=int, default=2048, show_default=True)
@click.option("--max-num-seqs", type=int, default=256, show_default=True)
@click.option("--max-model-len", type=int, help="Default: the model's context length.")
@click.option("--kv-cache-memory", help="KV pool size, e.g. 1GiB (kv_cache_memory_bytes).")
@click.option("--gpu-memory-utilization", type=float)
@click.option("--enforce-eager/--no-enforce-eager", default=None,
              help="Default: eager on CPU, CUDA graphs on GPU.")
@click.option("--load-format", default="dummy", show_default=True,
              help="dummy = random weights from config.json only (timing does not depend on "
                   "weight values).")
@click.option("--temperature", type=float, default=0.6, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--engine-arg", "engine_arg", multiple=True,
              help="Any other vLLM EngineArgs field, KEY=VALUE (VALUE parsed as JSON).")
@click.option("--wait-for-quiet", "quiet_timeout_s", type=float, default=0.0, show_default=True,
              help="Seconds to wait, before each cell and re-measurement, for other processes "
                   "to leave the CPU (shared hosts).")
@click.option("--quiet-cores", type=float, default=0.5, show_default=True,
              help="With --wait-for-quiet: other processes count as quiet below this many busy "
                   "cores (raise it when the engine uses fewer cores than the host has).")
@click.option("--dry-run", is_flag=True, help="Print the plan and its checks; start no engine.")
def command(model, name, out_dir, grid, prefill_lens, prefill_counts, decode_batches,
            decode_contexts, mixed_chunks, repetitions, decode_steps, warmup_steps, seed,
            dtype, tensor_parallel_size, kv_cache_dtype, block_size, max_num_batched_tokens,
            max_num_seqs, max_model_len, kv_cache_memory, gpu_memory_utilization,
            enforce_eager, load_format, temperature, top_p, engine_arg, quiet_timeout_s,
            quiet_cores, dry_run):
    """Profile a real vLLM engine (MODEL: a directory holding config.json, or an HF id).

    Drives LLMEngine in-process one step at a time through prefill, decode and mixed batch
    shapes and writes one row per step to PROFILES/NAME.parquet plus NAME.json metadata.
    """
    from rllmsim.profile.metadata import resolve_model
    from rllmsim.profile.plan import make_plan, parse_int_list

    plan = make_plan(
        grid,
        prefill_lens=parse_int_list(prefill_lens), prefill_counts=parse_int_list(prefill_counts),
        decode_batches=parse_int_list(decode_batches),
        decode_contexts=parse_int_list(decode_contexts),
        mixed_chunks=parse_int_list(mixed_chunks), repetitions=repetitions,
        decode_steps=decode_steps, warmup_steps=warmup_steps)
    plan = dataclasses.replace(plan, seed=seed)
    model_name, _ = resolve_model(model)
    name = name or f"{model_name}-{grid}"
    if "/" in name or name.startswith("."):
        raise ConfigError(f"--name must be a plain file name, got {name!r}")
    if max_model_len is not None:
        plan.check_engine_limits(max_num_seqs, max_model_len, max_num_batched_tokens)
    if dry_run:
        click.echo(json.dumps(plan.to_dict(), indent=2))
        click.echo(f"max_num_seqs needed: {plan.max_seqs_needed()}, max_model_len needed: "
                   f"{plan.max_len_needed(max_num_batched_tokens)}")
        if block_size:
            click.echo(f"peak KV blocks of {block_size}: "
                       f"{plan.peak_blocks(block_size, max_num_batched_tokens)}")
        return

    from rllmsim.profile.vllm_runner import EngineSettings, run_profile

    settings = EngineSettings(
        model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
        kv_cache_dtype=kv_cache_dtype, block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
        max_model_len=max_model_len, kv_cache_memory_bytes=parse_size(kv_cache_memory),
        gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
        load_format=load_format, seed=seed, temperature=temperature, top_p=top_p,
        extra=parse_engine_args(engine_arg))
    argv = "rllmsim profile " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else None
    try:
        result = run_profile(plan, settings, out_dir, name,
                             log=lambda msg: click.echo(msg, err=True), command=argv,
                             quiet_timeout_s=quiet_timeout_s, quiet_cores=quiet_cores)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM
        click.echo("interrupted: the steps measured so far are kept in "
                   f"{out_dir}/{name}.parquet", err=True)
        sys.exit(130)
    click.echo(f"profile {name}: {result.steps} steps in {result.wall_s:.1f}s -> "
               f"{result.parquet_path}")
