"""The KV transfer between a prefill and a decode instance: bytes over a link, plus a latency.

vLLM's NixlConnector (`vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py`) has the
decode instance's workers read the prompt's KV blocks from the prefill instance's GPUs, each TP
rank from the rank(s) holding its heads, all ranks at once over their own links. So the busiest
link carries the larger of the two instances' per-GPU KV shard of the prompt, and one transfer
takes latency + prompt tokens x that shard's bytes per token / link bandwidth. Transfers do not
share links here: each runs at the full bandwidth (no contention between concurrent transfers).

Presets (bandwidth per GPU, one direction; the latencies are assumptions, not measurements: the
order of one NIXL read request and its completion notification over that fabric):

- `nvlink`: both instances in one NVLink domain; the slower GPU's NVLink bandwidth from the GPU
  catalog (`interconnect_gbps`, GB/s per direction: 450 for NVLink 4 on H100/H200), 0.01 ms;
- `rdma`: InfiniBand / RoCE through NIXL (UCX), one 400 Gb/s ConnectX-7 NIC per GPU as in the
  DGX H100 (NVIDIA DGX H100 user guide: eight single-port ConnectX-7 for the compute fabric), 0.05 ms;
- `tcp`: NIXL's TCP path over a 100 Gb/s Ethernet NIC per GPU at line rate, 0.5 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rllmsim.errors import ConfigError
from rllmsim.specs import GPUSpec

#: preset -> (Gb/s per GPU or None for the GPUs' NVLink figure, per-transfer latency in ms)
PRESETS: dict[str, tuple[float | None, float]] = {
    "nvlink": (None, 0.01),
    "rdma": (400.0, 0.05),
    "tcp": (100.0, 0.5),
}
DEFAULT_PRESET = "rdma"


@dataclass(frozen=True)
class KVTransfer:
    """A link of `gbps` gigabits per second per GPU and a fixed `latency_s` per transfer."""

    preset: str
    gbps: float
    latency_s: float

    def seconds(self, shard_bytes: np.ndarray) -> np.ndarray:
        """Transfer time of each request whose busiest link carries `shard_bytes`."""
        return self.latency_s + np.asarray(shard_bytes, dtype=np.float64) * 8.0 / (self.gbps * 1e9)

    def to_dict(self) -> dict[str, float | str]:
        return {"preset": self.preset, "gbps": self.gbps, "latency_s": self.latency_s}


def kv_transfer(preset: str | None, gbps: float | None, latency_ms: float | None,
                gpus: tuple[GPUSpec, GPUSpec]) -> KVTransfer:
    """The link a preset names (default rdma), with `gbps` / `latency_ms` overriding its figures."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise ConfigError(f"--kv-transfer {name!r} is not a preset; choose one of {', '.join(PRESETS)}, "
                          "or give --kv-transfer-gbps")
    preset_gbps, preset_latency = PRESETS[name]
    if preset_gbps is None:
        preset_gbps = 8.0 * min(gpu.interconnect_gbps for gpu in gpus)
    bandwidth = preset_gbps if gbps is None else gbps
    latency = preset_latency if latency_ms is None else latency_ms
    if not (math.isfinite(bandwidth) and bandwidth > 0):
        where = "--kv-transfer-gbps" if gbps is not None else f"--kv-transfer {name} (the GPU lists no NVLink bandwidth)"
        raise ConfigError(f"{where}: the bandwidth must be a number > 0, got {bandwidth}; give e.g. --kv-transfer-gbps 400")
    if not (math.isfinite(latency) and latency >= 0):
        raise ConfigError(f"--kv-transfer-latency-ms must be a number >= 0, got {latency}")
    return KVTransfer(name, float(bandwidth), float(latency) / 1e3)
