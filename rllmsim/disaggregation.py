"""Prefill/decode disaggregation: which pools a deployment has and the link between them.

`--prefill-replicas N --decode-replicas M` splits serving as vLLM's disaggregated serving does
(`examples/online_serving/disaggregated_serving/` with the NixlConnector): N prefill instances
and M decode instances, each pool its own `Deployment` (GPU, TP and engine limits default to the
shared flags; `--prefill-tp`, `--decode-max-num-seqs`, ... override one pool). The engine side is
`rllmsim.engine.disaggregated`; the link is `rllmsim.engine.kv_transfer`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from rllmsim.deployment import Deployment
from rllmsim.engine.kv_transfer import KVTransfer, kv_transfer
from rllmsim.errors import ConfigError
from rllmsim.specs import dtype_bytes, load_gpu

#: per-pool flags: option name -> the Deployment field it sets in that pool
POOL_FIELDS = {"tp": "tp", "gpu": "gpu", "max_num_seqs": "max_num_seqs",
               "max_num_batched_tokens": "max_num_batched_tokens"}
POOLS = ("prefill", "decode")
LINK_OPTIONS = ("kv_transfer", "kv_transfer_gbps", "kv_transfer_latency_ms")
#: every option this module reads, so the commands can tell a PD flag from a colocated one
OPTION_NAMES = (tuple(f"{pool}_{name}" for pool in POOLS for name in ("replicas", *POOL_FIELDS)) + LINK_OPTIONS)


@dataclass(frozen=True)
class Disaggregation:
    """The prefill pool, the decode pool (each with its own replicas) and the KV link."""

    prefill: Deployment
    decode: Deployment
    transfer: KVTransfer

    @property
    def gpus(self) -> int:
        return sum(pool.replicas * pool.gpus_per_replica for pool in (self.prefill, self.decode))

    def shard_bytes_per_token(self) -> float:
        """KV bytes per prompt token on the busiest link: the larger per-GPU shard of the two pools."""
        return max(self.prefill.kv_bytes_per_token_per_gpu, self.decode.kv_bytes_per_token_per_gpu)

    def transfer_seconds(self, prompt_tokens: np.ndarray) -> np.ndarray:
        return self.transfer.seconds(np.asarray(prompt_tokens, dtype=np.float64) * self.shard_bytes_per_token())

    def prompt_kv_bytes(self, prompt_tokens: np.ndarray) -> np.ndarray:
        """The whole prompt KV of the model in its KV dtype (every layer and head)."""
        d = self.decode
        return np.asarray(prompt_tokens, dtype=np.float64) * d.model.kv_bytes_per_token(dtype_bytes(d.kv_cache_dtype))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kv_transfer": self.transfer.to_dict(), "gpus": self.gpus}
        for name in POOLS:
            pool = getattr(self, name)
            out[name] = {"replicas": pool.replicas, "tp": pool.tp, "gpu": pool.gpu.name,
                         "max_num_seqs": pool.max_num_seqs, "max_num_batched_tokens": pool.max_num_batched_tokens,
                         "num_gpu_blocks": pool.num_gpu_blocks}
        return out


def disaggregation_from_options(opts: Mapping[str, Any], deployment: Deployment) -> Disaggregation | None:
    """The pools the options describe over the shared `deployment`; None when neither pool's
    replica count is given (a colocated deployment), and then no PD flag may be."""
    counts = {pool: opts.get(f"{pool}_replicas") for pool in POOLS}
    if all(n is None for n in counts.values()):
        stray = [name for name in OPTION_NAMES if opts.get(name) is not None]
        if stray:
            flag = "--" + stray[0].replace("_", "-")
            raise ConfigError(f"{flag} applies to disaggregated serving; give --prefill-replicas N "
                              "--decode-replicas M too, or drop it")
        return None
    for pool, n in counts.items():
        if n is None:
            other = "decode" if pool == "prefill" else "prefill"
            raise ConfigError(f"--{other}-replicas needs --{pool}-replicas: give both pool sizes, "
                              "as in --prefill-replicas 2 --decode-replicas 6")
        if n < 1:
            raise ConfigError(f"--{pool}-replicas must be >= 1, got {n}")
    _check_shared(deployment)
    pools = {pool: _pool(pool, counts[pool], opts, deployment) for pool in POOLS}
    link = kv_transfer(opts.get("kv_transfer"), opts.get("kv_transfer_gbps"), opts.get("kv_transfer_latency_ms"),
                       (pools["prefill"].gpu, pools["decode"].gpu))
    return Disaggregation(pools["prefill"], pools["decode"], link)


def _check_shared(deployment: Deployment) -> None:
    """What the pools cannot take from the shared deployment (not modelled, or ambiguous)."""
    if deployment.replicas != 1:
        raise ConfigError(f"--replicas {deployment.replicas} with --prefill-replicas/--decode-replicas: the pool "
                          "sizes give the replica counts; drop --replicas")
    if deployment.data_parallel_size != 1:
        raise ConfigError("--data-parallel-size with disaggregated pools is not modelled; drop it or "
                          "--prefill-replicas/--decode-replicas")
    if deployment.kv_layout.hybrid:
        raise ConfigError(f"{deployment.model.name} has sliding-window layers, whose KV transfer is not modelled; "
                          "disaggregated serving needs a model with full attention only")
    unmodelled = [(deployment.pipeline_parallel_size > 1, "--pipeline-parallel-size"),
                  (deployment.kv_offloading_size is not None, "--kv-offloading-size"),
                  (deployment.enable_migration, "--enable-migration")]
    for given, flag in unmodelled:
        if given:
            raise ConfigError(f"{flag} with disaggregated pools is not modelled; drop it or "
                              "--prefill-replicas/--decode-replicas")


def _pool(pool: str, replicas: int, opts: Mapping[str, Any], deployment: Deployment) -> Deployment:
    """The shared deployment with this pool's replicas and overrides, validated as any deployment."""
    changes: dict[str, Any] = {"replicas": replicas}
    for option, field in POOL_FIELDS.items():
        value = opts.get(f"{pool}_{option}")
        if value is not None:
            changes[field] = load_gpu(value) if field == "gpu" else value
    if "gpu" in changes and "max_num_seqs" not in changes and opts.get("max_num_seqs") is None:
        changes["max_num_seqs"] = None  # the pool's GPU picks vLLM's default, as --gpu does
    if "gpu" in changes and "max_num_batched_tokens" not in changes and opts.get("max_num_batched_tokens") is None:
        changes["max_num_batched_tokens"] = None
    try:
        return dataclasses.replace(deployment, **changes)
    except ConfigError as err:
        raise ConfigError(f"{pool} pool: {err}") from None
