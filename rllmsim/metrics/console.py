"""The summary as a console table shaped like `vllm bench serve`'s result block."""

from __future__ import annotations

from typing import Any

from rllmsim.metrics.load import load_warning

WIDTH = 50


def _title(text: str, fill: str = "-") -> str:
    return text.center(WIDTH, fill)


def _row(label: str, value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.2f}"
    return f"{label:<40}{value:>10}"


def format_summary(summary: dict[str, Any]) -> str:
    req, tput, kv = summary["requests"], summary["throughput"], summary["kv"]
    lines = [
        _title(" Serving Simulation Result ", "="),
        _row("Successful requests:", req["completed"]),
        _row("Rejected requests:", req["rejected"]),
        _row("Benchmark duration (s):", summary["duration_s"]),
        _row("Total input tokens:", summary["tokens"]["input"]),
        _row("Total generated tokens:", summary["tokens"]["output"]),
        *([_row("  of which reasoning:", summary["tokens"]["reasoning"])] if "reasoning" in summary["tokens"] else []),
        _row("Request throughput (req/s):", tput["requests_per_s"]),
        _row("Output token throughput (tok/s):", tput["output_tokens_per_s"]),
        _row("Total token throughput (tok/s):", tput["total_tokens_per_s"]),
    ]
    if "goodput" in summary:
        lines.append(_row("Request goodput (req/s):", summary["goodput"]["requests_per_s"]))
    for key, title, name in (("ttft_s", "Time to First Token", "TTFT"),
                             ("ttfvt_s", "Time to First Visible Token (after reasoning)", "TTFVT"),
                             ("tpot_s", "Time per Output Token (excl. 1st token)", "TPOT"),
                             ("itl_s", "Inter-token Latency", "ITL"),
                             ("e2el_s", "End-to-end Latency", "E2EL")):
        if key not in summary or None in summary[key].values():
            continue  # TTFVT of a run whose requests never reached an answer (NaN, null once written)
        stats = summary[key]
        lines.append(_title(title))
        lines.append(_row(f"Mean {name} (ms):", 1e3 * stats["mean"]))
        lines.append(_row(f"Median {name} (ms):", 1e3 * stats["p50"]))
        lines.append(_row(f"P90 {name} (ms):", 1e3 * stats["p90"]))
        lines.append(_row(f"P99 {name} (ms):", 1e3 * stats["p99"]))
    strag = summary["stragglers"]
    lines += [
        _title("KV Cache and Scheduling"),
        _row("KV capacity (blocks):", kv["capacity_blocks"]),
        _row("KV peak (blocks):", kv["peak_blocks"]),
        _row("KV peak usage (%):", kv["peak_pct"]),
        _row("KV mean usage (%):", kv["mean_pct"]),
        _row("KV usage CV:", kv["cv"]),
        _row("Preemptions:", summary["preemptions"]),
        _row(f"Stragglers (> {strag['factor']:g}x cohort median E2EL):", strag["count"]),
        _row("Stragglers-only share of duration (%):", 100.0 * strag["share_of_makespan"]),
    ]
    if "speculative" in summary:  # as vLLM's SpecDecoding metrics log them, over the whole run
        spec = summary["speculative"]
        lines += [
            _title(f"Speculative Decoding ({spec['method']}, k={spec['num_speculative_tokens']})"),
            _row("Draft acceptance rate (%):", 100.0 * spec["simulated"]["draft_acceptance_rate"]),
            _row("Mean acceptance length:", spec["simulated"]["mean_acceptance_length"]),
        ]
    tier = summary.get("kv_offloading")
    if tier:  # the CPU KV tier (--kv-offloading-size)
        lines += [
            _title(f"KV Offloading ({tier['backend']})"),
            _row("Offloaded to CPU (GiB):", tier["offloaded_bytes"] / 2**30),
            _row("Reloaded from CPU (GiB):", tier["reloaded_bytes"] / 2**30),
            _row("CPU tier hit rate (%):", 100.0 * tier["hit_rate"]),
            _row("Recompute tokens saved:", tier["recompute_tokens_saved"]),
        ]
    moved = summary.get("migration")
    if moved:
        lines += [
            _title("Live migration"),
            _row("Requests migrated:", moved["migrations"]),
            _row("Migrations abandoned:", moved["abandoned"]),
            _row("Migrated KV (GiB):", moved["migrated_bytes"] / 2**30),
        ]
    pipe = summary.get("pipeline")
    if pipe:
        lines += [
            _title(f"Pipeline parallel (PP {pipe['pipeline_parallel_size']})"),
            _row("Sequences per micro-batch:", pipe["mean_micro_batch_seqs"]),
            _row("Stage busy (%):", " / ".join(f"{100.0 * s:.1f}" for s in pipe["stage_busy_share"])),
            _row("Pipeline bubble (%):", 100.0 * pipe["bubble_share"]),
        ]
    dp = summary.get("data_parallel")
    if dp:
        lines += [
            _title(f"Data parallel (DP {dp['data_parallel_size']}, lockstep)"),
            _row("Rank-steps waiting on slowest rank (%):", 100.0 * dp["dp_sync_wait_share"]),
            _row("Dummy rank-steps (%):", 100.0 * dp["dummy_step_share"]),
            _row("Shared experts + exchange (%):", 100.0 * dp["shared_moe_share"]),
        ]
    lines += _disaggregated_lines(summary.get("disaggregated"))
    lines += [
        _title("Simulation"),
        _row("Simulated time (s):", summary["sim"]["simulated_s"]),
        _row("Wall time (s):", summary["sim"]["wall_s"]),
        _row("Engine steps:", summary["sim"]["steps"]),
        "=" * WIDTH,
    ]
    lines += [f"note: {note}" for note in summary.get("lengths_notes", [])]
    if "fidelity" in summary:
        lines.append(summary["fidelity"]["line"])
    warning = load_warning(summary.get("load"))
    if warning:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def _disaggregated_lines(pools: dict[str, Any] | None) -> list[str]:
    """Each pool's shape, utilisation and waits, and the KV transfer (the KV rows above are decode's)."""
    if not pools:
        return []
    p, d, link = pools["prefill"], pools["decode"], pools["kv_transfer"]
    return [
        _title(f"Disaggregated ({p['replicas']}P x TP{p['tp']} / {d['replicas']}D x TP{d['tp']})"),
        _row("Prefill utilisation (%):", 100.0 * p["utilization"]),
        _row("Decode utilisation (%):", 100.0 * d["utilization"]),
        _row("Mean prefill queue (ms):", 1e3 * p["queue_s"]["mean"]),
        _row("Prefill KV peak usage (%):", p["kv"]["peak_pct"]),
        _row("Mean wait for decode KV room (ms):", 1e3 * d["kv_wait_s"]["mean"]),
        _row("Mean wait for a decode step (ms):", 1e3 * d["decode_wait_s"]["mean"]),
        _row(f"Mean KV transfer, {link['preset']} (ms):", 1e3 * link["seconds"]["mean"]),
        _row("Mean KV per request (MB):", link["bytes_per_request_mean"] / 1e6),
    ]
