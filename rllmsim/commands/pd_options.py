"""The click options of prefill/decode disaggregation (`rllmsim.disaggregation`).

They join the deployment options, so `simulate`, `compare --variant`, the Python API's keywords
and sweeps all take them; a pool flag left out takes the shared flag's value.
"""

from __future__ import annotations

import click

from rllmsim.engine.kv_transfer import DEFAULT_PRESET, PRESETS


def _pool_options(pool: str) -> list:
    return [
        click.option(f"--{pool}-replicas", type=int, default=None,
                     help=f"Disaggregated serving: {pool} instances (give --prefill-replicas and --decode-replicas)."),
        click.option(f"--{pool}-tp", type=int, default=None, help=f"TP of each {pool} instance (default --tp)."),
        click.option(f"--{pool}-gpu", default=None, help=f"GPU of the {pool} pool (default --gpu)."),
        click.option(f"--{pool}-max-num-seqs", type=int, default=None,
                     help=f"max_num_seqs of each {pool} instance (default --max-num-seqs)."),
        click.option(f"--{pool}-max-num-batched-tokens", type=int, default=None,
                     help=f"max_num_batched_tokens of each {pool} instance (default --max-num-batched-tokens)."),
    ]


PD_OPTIONS = [
    *_pool_options("prefill"),
    *_pool_options("decode"),
    click.option("--kv-transfer", type=click.Choice(list(PRESETS)), default=None,
                 help=f"Prefill-to-decode KV link preset (default {DEFAULT_PRESET}; docs/architectures.md)."),
    click.option("--kv-transfer-gbps", type=float, default=None,
                 help="KV link bandwidth per GPU in Gb/s, instead of the preset's."),
    click.option("--kv-transfer-latency-ms", type=float, default=None,
                 help="Latency per KV transfer in ms, instead of the preset's."),
]
