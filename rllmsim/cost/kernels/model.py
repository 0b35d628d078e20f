"""The op-level step-time model: a step is the sum of its ops' measured times, plus host time.

A step of T tokens over S sequences costs, on the GPU,
  sum over layers of its projections (or fused MoE), elementwise kernels and TP all-reduces at T
  + lm_head and sampler at S
  + prefill attention (chunk x context) + decode attention (sequences x context per sequence),
each looked up in the GPU's kernel tables (`sources.py`), and on the host the scheduling and
input/output work of `host.py`; async scheduling overlaps the two. Everything that depends only on
T or S is tabulated once per deployment for every T and S the engine limits allow, so a step
costs a few array lookups; decode runs (fast-forward) reuse one attention row per batch size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rllmsim import parallel
from rllmsim.cost.features import StepFeatures
from rllmsim.cost.kernels import sources
from rllmsim.cost.kernels.host import HostParams, combine
from rllmsim.cost.kernels.lookup import Curve, TabulatedCurve
from rllmsim.cost.kernels.ops import (KERNELS_PER_LAYER, capture_sizes, gemm_dtype, layer_shapes, LM_HEAD_DTYPE,
                                      max_capture_size, moe_dtype)
from rllmsim.cost.kernels.tables import KernelTables
from rllmsim.deployment import Deployment
from rllmsim.errors import ConfigError

US = 1e-6
#: The op groups a kernel correction scales (`rllmsim calibrate --on kernels`), in design-matrix order.
OP_GROUPS: tuple[str, ...] = ("linear", "attention", "per_sequence")


@dataclasses.dataclass(frozen=True)
class OpScales:
    """Multipliers on the kernel-table times of three op groups, fitted to a profile of a real engine.

    linear: the per-token ops (projections, MoE, elementwise kernels, TP all-reduces);
    attention: prefill, decode and mixed attention; per_sequence: lm_head and the sampler.
    1.0 leaves a group as the tables time it (and costs nothing: the multiply is skipped).
    """

    linear: float = 1.0
    attention: float = 1.0
    per_sequence: float = 1.0

    def __post_init__(self) -> None:
        for name in OP_GROUPS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ConfigError(f"op scale {name} must be a finite number >= 0, got {value!r}")

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in OP_GROUPS}


#: Attributes that belong to one model instance, never shared through the build cache.
_PER_RUN = frozenset({"deployment", "tables", "tables_label", "host", "scales", "calibration",
                      "seconds_total", "seconds_outside"})


class KernelCostModel:
    """Step time of one replica of `deployment` from its GPU's measured kernel tables."""

    def __init__(self, deployment: Deployment, tables: KernelTables, host: HostParams | None = None,
                 tables_label: str = "shipped", scales: OpScales | None = None,
                 calibration: dict[str, Any] | None = None) -> None:
        """`scales` multiply the op groups' table times and `host` replaces the assumed host time
        (both fitted by a kernel correction, named by `calibration` in the provenance)."""
        self.deployment = deployment
        self.tables = tables
        self.tables_label = tables_label
        self.host = host or HostParams()
        self.scales = scales or OpScales()
        self.calibration = calibration
        key = self._cache_key()
        built = tables.built_models.get(key) if key is not None else None
        if built is None:
            self._build()
            if key is not None:
                tables.built_models[key] = {name: value for name, value in vars(self).items() if name not in _PER_RUN}
        else:
            vars(self).update(built)
        self.seconds_total = 0.0
        self.seconds_outside = 0.0

    def _cache_key(self) -> tuple | None:
        """What the built tables depend on: a sweep or a probe builds the same deployment many
        times, and building takes a good fraction of a second; None if it cannot be hashed."""
        # the cluster-level knobs (replicas, migration between them) do not change a step's time
        key = (dataclasses.replace(self.deployment, replicas=1, enable_migration=False), self.host, self.scales)
        try:
            hash(key)
        except TypeError:
            return None
        return key

    def _build(self) -> None:
        d, tables = self.deployment, self.tables
        self.shapes = shapes = layer_shapes(d)
        spec_tokens = 1 + d.num_speculative_tokens
        self._max_tokens = max(d.max_num_batched_tokens, d.max_num_seqs * spec_tokens) + 1
        self._max_seqs = d.max_num_seqs + 1
        tokens = np.arange(self._max_tokens, dtype=np.int64)
        seqs = np.arange(self._max_seqs, dtype=np.int64)
        kv_dtype = "fp8" if d.kv_cache_dtype.startswith("fp8") else "bfloat16"
        profile = tables.profile_for(d.model.hf_id, d.tp) if d.quantization is None and kv_dtype == "bfloat16" else None
        if profile is not None:
            self.ops = sources.from_layer_profile(profile, shapes, tokens, seqs)
        else:
            self.ops = sources.from_database(tables, shapes, gemm_dtype(d), kv_dtype, d.model,
                                             d.gpu.hbm_bandwidth_gbps, tokens, seqs, LM_HEAD_DTYPE)
        if parallel.lockstep(d):  # routed experts run over all DP ranks' tokens: rllmsim.cost.data_parallel
            self.ops.token_ops.pop("moe", None)
        elif d.model.num_moe_layers and "moe" not in self.ops.token_ops:
            self._add_moe(tokens)
        self._capture_size = max_capture_size(d)
        self._graphed = (tokens <= self._capture_size) & (self._capture_size > 0)
        padded = self._padded_tokens(tokens)
        self._add_allreduce(tokens, padded)
        token_us = sum(self.ops.token_ops.values())
        outside_us = sum(np.where(self.ops.token_outside[k], v, 0.0) for k, v in self.ops.token_ops.items())
        # a graphed step runs at its padded size; an eager one no faster than the CPU launches it
        launch_us = np.where(self._graphed, 0.0, shapes.layers * KERNELS_PER_LAYER * self.host.launch_s / US)
        # the unscaled group times are the design matrix of a kernel correction (`op_group_seconds`)
        self._token_unscaled_s = self._token_s = np.maximum(token_us[padded], launch_us) * US
        self._token_outside_s = outside_us[padded] * US
        self._seq_unscaled_s = self._seq_s = sum(self.ops.seq_ops.values()) * US
        self._seq_outside_s = sum(np.where(self.ops.seq_outside[k], v, 0.0) for k, v in self.ops.seq_ops.items()) * US
        linear, per_seq = self.scales.linear, self.scales.per_sequence
        if linear != 1.0:  # the kernels take longer or shorter; the CPU's launch floor does not move
            self._token_s = np.maximum(token_us[padded] * linear, launch_us) * US
            self._token_outside_s = self._token_outside_s * linear
        if per_seq != 1.0:
            self._seq_s = self._seq_unscaled_s * per_seq
            self._seq_outside_s = self._seq_outside_s * per_seq
        # seconds per microsecond of one layer's attention, all layers of each kind (and the attention scale)
        self._attention_factor = shapes.full_attention_layers * US
        self._sliding_factor = shapes.sliding_layers * US
        if self.scales.attention != 1.0:
            self._attention_factor = shapes.full_attention_layers * US * self.scales.attention
            self._sliding_factor = shapes.sliding_layers * US * self.scales.attention
        self._decode_rows: dict[int, tuple[TabulatedCurve, bool]] = {}
        self._run_terms: dict[tuple[int, int], tuple[TabulatedCurve, float, float, float, bool]] = {}

    # -- construction ---------------------------------------------------------------------------
    def _padded_tokens(self, tokens: np.ndarray) -> np.ndarray:
        sizes = np.array(capture_sizes(max(self._capture_size, 1)), dtype=np.int64)
        index = np.minimum(np.searchsorted(sizes, tokens), len(sizes) - 1)
        return np.where(self._graphed & (tokens > 0), np.maximum(sizes[index], tokens), tokens)

    def _add_moe(self, tokens: np.ndarray) -> None:
        d, m = self.deployment, self.deployment.model
        args = (moe_dtype(d), m.hidden_size, m.moe_intermediate_size, m.num_experts_per_tok, m.num_experts, d.tp)
        # with expert parallelism each rank runs whole experts: moe_tp 1, moe_ep = the TP group
        tp, ep = (1, d.tp) if d.enable_expert_parallel else (d.tp, 1)
        found = sources.moe_from_database(self.tables, *args[:5], tp, tokens, ep=ep)
        if found is None and args[0] != gemm_dtype(d):
            raise ConfigError(f"kernel tables of {d.gpu.name} have no fused {args[0]} MoE rows at {m.name}'s expert "
                              f"shape (moe_tp {tp}, moe_ep {ep}) and no {args[0]} GEMMs; timed by the roofline")
        if found is None:
            found = sources.routed_experts_from_gemms(self.tables, args[0], self.shapes, *args[1:], tokens)
            self.ops.sources["moe"] = "GEMM tables per touched expert"
        else:
            self.ops.sources["moe"] = "fused MoE table"
        self.ops.token_ops["moe"] = m.num_moe_layers * found[0]
        self.ops.token_outside["moe"] = found[1]

    def _add_allreduce(self, tokens: np.ndarray, padded: np.ndarray) -> None:
        """Two all-reduces per layer of the step's hidden states, timed as vLLM's own all-reduce
        dispatch was measured on this GPU (its custom kernel, symmetric memory or NCCL, whichever
        vLLM picks per size; replayed in a CUDA graph or eager), or plain NCCL with
        `--disable-custom-all-reduce` or where vLLM's dispatch was not measured."""
        d = self.deployment
        if d.tp == 1:
            return
        message = padded * self.shapes.allreduce_bytes_per_token
        graph = eager = None
        if not d.disable_custom_all_reduce:
            graph = sources.allreduce_curve(self.tables, "vllm_graph", d.tp)
            eager = sources.allreduce_curve(self.tables, "vllm_eager", d.tp)
        nccl = sources.allreduce_curve(self.tables, "nccl", d.tp)
        if graph is not None and eager is not None:
            time = np.where(self._graphed, graph(message), eager(message))
            outside = graph.outside(message)
            self.ops.sources["allreduce"] = "vLLM all-reduce as measured through vLLM"
        elif nccl is not None:
            time, outside = nccl(message), nccl.outside(message)
            self.ops.sources["allreduce"] = "NCCL"
        else:
            raise ConfigError(f"kernel tables of {d.gpu.name} have no all-reduce rows for {d.tp} GPUs; "
                              "use --cost-model roofline")
        calls = 2 * self.shapes.layers
        self.ops.token_ops["allreduce"] = calls * time * (tokens > 0)
        self.ops.token_outside["allreduce"] = outside
        if self.shapes.norm_allreduces:
            # a q/k RMSNorm over the whole layer all-reduces its fp32 variance, 4 bytes a token
            curve = graph if graph is not None else nccl
            variance = np.where(self._graphed, curve(padded * 4.0), (eager or curve)(padded * 4.0))
            self.ops.token_ops["norm_allreduce"] = self.shapes.norm_allreduces * self.shapes.layers * variance * (tokens > 0)
            self.ops.token_outside["norm_allreduce"] = curve.outside(padded * 4.0)

    # -- step time ------------------------------------------------------------------------------
    # A scheduled step is costed on Python floats, a fast-forwarded run on arrays; both use the
    # same tables and the same order of operations, so a step costs the same bits either way.
    def _linear_scalar(self, tokens: int, seqs: int) -> tuple[float, float]:
        """Seconds of a step's projections, MoE, elementwise kernels, all-reduces, lm_head and
        sampler (and the extrapolated part of them)."""
        t = min(tokens, self._max_tokens - 1)
        s = min(seqs, self._max_seqs - 1)
        scale = tokens / max(t, 1) if tokens > t else 1.0  # beyond the engine limits: edge efficiency
        return (float(self._token_s[t]) * scale + float(self._seq_s[s]),
                float(self._token_outside_s[t]) * scale + float(self._seq_outside_s[s]))

    def _decode_curve(self, seqs: int) -> tuple[Curve, bool]:
        """Decode attention (seconds, all layers) against context per sequence for a batch of
        `seqs` sequences: the two measured batch rows around it, interpolated at every context
        either measured; and whether that lies beyond what was measured."""
        grid, sliding = self.ops.decode_attention, self.ops.sliding
        i, j, _, _ = grid.bracket(float(seqs))
        contexts = np.union1d(grid.curves[i].x, grid.curves[j].x)
        if sliding is None:
            curve = Curve(contexts, grid.at_row(float(seqs), contexts) * self._attention_factor)
            return curve, seqs > grid.rows[-1] or not self.ops.attention_exact_shape
        # sliding-window layers beside the full ones: both at the contexts either measured (and the window)
        k, l, _, _ = sliding.decode.bracket(float(seqs))
        contexts = np.union1d(contexts, np.union1d(sliding.decode.curves[k].x, sliding.decode.curves[l].x))
        contexts = np.union1d(contexts, [float(sliding.window)])
        seconds = (grid.at_row(float(seqs), contexts) * self._attention_factor
                   + sliding.decode.at_row(float(seqs), sliding.decode_context(contexts)) * self._sliding_factor)
        beyond = seqs > grid.rows[-1] or seqs > sliding.decode.rows[-1] or not self.ops.attention_exact_shape
        return Curve(contexts, seconds), beyond

    def _decode_table(self, seqs: int) -> tuple[TabulatedCurve, bool]:
        """`_decode_curve` tabulated against the batch's total KV tokens, memoised (mixed steps)."""
        hit = self._decode_rows.get(seqs)
        if hit is None:
            curve, beyond = self._decode_curve(seqs)
            hit = self._decode_rows[seqs] = (TabulatedCurve(curve, x_scale=seqs), beyond)
        return hit

    def _decode_attention_s(self, seqs: int, kv_tokens: np.ndarray) -> tuple[np.ndarray, float]:
        """Decode attention of `seqs` sequences reading `kv_tokens` in all, and its extrapolated part."""
        table, beyond = self._decode_table(seqs)
        largest = float(kv_tokens.max())
        seconds = table(kv_tokens, largest)
        if beyond:
            return seconds, float(seconds.sum())
        if largest > table.x_max:
            return seconds, float(seconds[kv_tokens > table.x_max].sum())
        return seconds, 0.0

    def _decode_step_table(self, seqs: int, per_seq: int) -> tuple[TabulatedCurve, float, float, float, bool]:
        """A pure decode step of `seqs` sequences (`per_seq` tokens each) against its total KV
        tokens: attention plus everything else of the step folded into one table, memoised, so a
        fast-forwarded run of such steps costs one interpolation; with the rest of the step's GPU
        time, its extrapolated part, the host time, and whether the attention lies beyond the grid.
        A scheduled decode-only step is costed through the same table, so both give the same bits."""
        key = (seqs, per_seq)
        hit = self._run_terms.get(key)
        if hit is None:
            linear, linear_outside = self._linear_scalar(seqs * per_seq, seqs)
            curve, beyond = self._decode_curve(seqs)
            table = TabulatedCurve(curve, x_scale=seqs, y_offset=linear)
            hit = self._run_terms[key] = (table, linear, linear_outside, self.host.seconds(seqs, seqs * per_seq), beyond)
        return hit

    def _decode_step_s(self, seqs: int, per_seq: int, kv_tokens: np.ndarray) -> tuple[np.ndarray, float, float]:
        """GPU seconds of pure decode steps, their extrapolated part, and the host seconds of one."""
        table, linear, linear_outside, host, beyond = self._decode_step_table(seqs, per_seq)
        largest = float(max(kv_tokens[0], kv_tokens[-1]))  # a run's contexts only grow
        gpu = table(kv_tokens, largest)
        outside = linear_outside * len(kv_tokens)
        if beyond:
            outside += float(gpu.sum()) - linear * len(kv_tokens)
        elif largest > table.x_max:
            over = kv_tokens > table.x_max
            outside += float(gpu[over].sum()) - linear * int(over.sum())
        return gpu, outside, host

    def _prefill_attention_s(self, tokens: int, pairs: int) -> tuple[float, float]:
        """Prefill attention of one step, all its chunks taken as one chunk with the same
        query-key pairs: exact for one chunk, the usual case under a token budget."""
        chunk = float(tokens)
        context = chunk + max(pairs / chunk - (chunk + 1) / 2, 0.0)
        grid, sliding = self.ops.prefill_attention, self.ops.sliding
        seconds = grid.at_row_scalar(chunk, context) * self._attention_factor
        outside = grid.outside_scalar(chunk, context) or not self.ops.attention_exact_shape
        if sliding is not None:
            seconds += sliding.prefill.at_row_scalar(chunk, context) * self._sliding_factor
            outside = outside or sliding.prefill.outside_scalar(chunk, context)
        return seconds, seconds if outside else 0.0

    def _mixed_attention_s(self, tokens: int, pairs: int, seqs: int, decode_kv: int) -> tuple[float, float] | None:
        """A step's prefill chunk and decodes as one measured call, where the tables have it."""
        grid = self.ops.mixed_attention
        if grid is None:
            return None
        before = max(pairs / tokens - (tokens + 1) / 2, 0.0)
        us, outside = grid(float(tokens), tokens + before, float(seqs), decode_kv / seqs)
        if not np.isfinite(us):
            return None
        seconds = us * self._attention_factor
        return seconds, seconds if outside else 0.0

    def _attention_scalar(self, prefill_tokens: int, pairs: int, decode_seqs: int, decode_kv: int) -> tuple[float, float]:
        if prefill_tokens and decode_seqs:
            mixed = self._mixed_attention_s(prefill_tokens, pairs, decode_seqs, decode_kv)
            if mixed is not None:
                return mixed
        seconds = outside = 0.0
        if decode_seqs:
            decode, beyond = self._decode_attention_s(decode_seqs, np.array([float(decode_kv)]))
            seconds, outside = float(decode[0]), beyond
        if prefill_tokens:
            prefill, beyond = self._prefill_attention_s(prefill_tokens, pairs)
            seconds, outside = seconds + prefill, outside + beyond
        return seconds, outside

    def _step_scalar(self, prefill_tokens: int, prefill_seqs: int, pairs: int, decode_seqs: int, decode_tokens: int,
                     decode_kv: int) -> float:
        if not prefill_tokens and decode_seqs and decode_tokens % decode_seqs == 0:
            gpu_steps, outside, host = self._decode_step_s(decode_seqs, decode_tokens // decode_seqs,
                                                           np.array([float(decode_kv)]))
            gpu = float(gpu_steps[0])
            self.seconds_total += gpu
            self.seconds_outside += outside
            return combine(gpu, host, self.deployment.async_scheduling, self.host.serial_s, maximum=max)
        tokens, seqs = prefill_tokens + decode_tokens, prefill_seqs + decode_seqs
        linear, linear_outside = self._linear_scalar(tokens, seqs)
        attention, attention_outside = self._attention_scalar(prefill_tokens, pairs, decode_seqs, decode_kv)
        gpu = attention + linear
        self.seconds_total += gpu
        self.seconds_outside += linear_outside + attention_outside
        return combine(gpu, self.host.seconds(seqs, tokens), self.deployment.async_scheduling, self.host.serial_s,
                       maximum=max)

    def step_time(self, features: StepFeatures) -> np.ndarray:
        f = features
        if f.decode_batch is None:
            rows = zip(f.prefill_tokens.tolist(), f.prefill_seqs.tolist(), f.prefill_attn_pairs.tolist(),
                       f.decode_seqs.tolist(), f.decode_tokens.tolist(), f.decode_kv_tokens.tolist())
            return np.array([self._step_scalar(*row) for row in rows], dtype=np.float64)
        gpu, outside, host = self._decode_step_s(*f.decode_batch, f.decode_kv_tokens)
        # the run's GPU seconds for the extrapolated share: a run's step times grow linearly with
        # its contexts, so the mean of the first and last is their mean (and costs no reduction)
        self.seconds_total += 0.5 * (float(gpu[0]) + float(gpu[-1])) * len(gpu)
        self.seconds_outside += outside
        return combine(gpu, host, self.deployment.async_scheduling, self.host.serial_s)

    def host_seconds(self, features: StepFeatures) -> np.ndarray:
        """The host part of each step's time (`step_time` adds it to the GPU's, or overlaps it):
        a pipeline-parallel replica's engine core does it once per micro-batch while the stages
        share the GPU part (`rllmsim.engine.pipeline_replica`)."""
        f = features
        seqs, tokens = f.prefill_seqs + f.decode_seqs, f.prefill_tokens + f.decode_tokens
        return self.host.seconds(seqs, tokens) + self.host.serial_s

    def op_group_seconds(self, features: StepFeatures) -> np.ndarray:
        """GPU seconds of each step's op groups (steps x OP_GROUPS: linear, attention,
        per_sequence) as the tables time them, before any scale: the design matrix a kernel
        correction is fitted on. Leaves the extrapolation counters alone."""
        f = features
        attention_scale = self.scales.attention
        rows = zip(f.prefill_tokens.tolist(), f.prefill_seqs.tolist(), f.prefill_attn_pairs.tolist(),
                   f.decode_seqs.tolist(), f.decode_tokens.tolist(), f.decode_kv_tokens.tolist())
        out = np.empty((len(f), len(OP_GROUPS)), dtype=np.float64)
        for i, (prefill_tokens, prefill_seqs, pairs, decode_seqs, decode_tokens, decode_kv) in enumerate(rows):
            tokens, seqs = prefill_tokens + decode_tokens, prefill_seqs + decode_seqs
            t = min(tokens, self._max_tokens - 1)
            beyond = tokens / max(t, 1) if tokens > t else 1.0  # as `_linear_scalar`
            attention = self._attention_scalar(prefill_tokens, pairs, decode_seqs, decode_kv)[0]
            if attention_scale != 1.0:
                attention = attention / attention_scale if attention_scale > 0 else float("nan")
            out[i] = (float(self._token_unscaled_s[t]) * beyond, attention,
                      float(self._seq_unscaled_s[min(seqs, self._max_seqs - 1)]))
        return out

    # -- reporting ------------------------------------------------------------------------------
    def breakdown(self, prefill_tokens: int, prefill_context: int, decode_seqs: int, decode_context: int) -> dict[str, float]:
        """Seconds per op of one step (for the docs' time-share figures): one prefill chunk of
        `prefill_tokens` after `prefill_context` cached tokens plus `decode_seqs` decodes."""
        tokens = prefill_tokens + decode_seqs
        seqs = decode_seqs + (1 if prefill_tokens else 0)
        t = min(tokens, self._max_tokens - 1)
        padded = int(self._padded_tokens(np.array([t]))[0])
        linear, per_seq = self.scales.linear, self.scales.per_sequence
        out = {name: float(v[padded]) * US * linear for name, v in self.ops.token_ops.items()}
        out.update({name: float(v[min(seqs, self._max_seqs - 1)]) * US * per_seq for name, v in self.ops.seq_ops.items()})
        pairs = prefill_tokens * prefill_context + prefill_tokens * (prefill_tokens + 1) // 2
        mixed = (self._mixed_attention_s(prefill_tokens, pairs, decode_seqs, decode_seqs * decode_context)
                 if prefill_tokens and decode_seqs else None)
        if mixed is not None:
            out["mixed_attention"] = mixed[0]
        elif decode_seqs:
            out["decode_attention"] = float(self._decode_attention_s(decode_seqs, np.array([float(decode_seqs * decode_context)]))[0][0])
        if prefill_tokens and mixed is None:
            out["prefill_attention"] = self._prefill_attention_s(prefill_tokens, pairs)[0]
        out["host"] = float(self.host.seconds(seqs, tokens))
        return out

    def extrapolated_share(self) -> float:
        return self.seconds_outside / self.seconds_total if self.seconds_total else 0.0

    def provenance(self) -> dict[str, Any]:
        d = self.deployment
        meta = self.tables.meta
        return {
            "kind": "kernels",
            "model": d.model.name,
            "gpu": d.gpu.name,
            "tp": d.tp,
            "quantization": d.quantization,
            "kv_cache_dtype": d.kv_cache_dtype,
            "tables": {"location": self.tables_label, "device": meta.get("device"), "sources": meta.get("sources"),
                       "vllm_versions": meta.get("vllm_versions")},
            "ops": dict(self.ops.sources),
            "attention_shape_measured": self.ops.attention_exact_shape,
            "async_scheduling": d.async_scheduling,
            "enforce_eager": d.enforce_eager,
            "host": dataclasses.asdict(self.host),
            "extrapolated_share": round(self.extrapolated_share(), 4),
            **({"scales": self.scales.as_dict()} if self.scales != OpScales() else {}),
            **({"calibration": self.calibration} if self.calibration is not None else {}),
        }
