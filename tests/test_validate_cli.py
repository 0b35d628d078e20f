"""`rllmsim validate` end to end on small fixtures: every output file, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from rllmsim.cli import main

DATA = Path(__file__).parent / "data" / "validate"
AIC_HEADER = ("id,silicon_data_source,backend,backend_version,model_path,system,precision,mode,isl,osl,"
              "batch_size,tp_size,silicon_ttft_ms,silicon_tpot_ms")
# synthetic rows in the aiconfigurator silicon format: a simulated case, an uncatalogued model, a
# disaggregated run, and a batch size that is not a recorded concurrency
AIC_ROWS = [
    "a,source_file=x.csv; silicon_concurrency=4,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,,agg,512,32,4,2,120.0,15.0",
    "b,source_file=x.csv; silicon_concurrency=8,vllm,0.12.0,acme/Uncatalogued-120B,h100_sxm,fp4,agg,512,32,8,4,50.0,5.0",
    "c,source_file=x.csv,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,fp8,disagg,512,32,,,300.0,9.0",
    "d,source_file=x.csv,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,fp8,agg,512,32,8,4,100.0,9.0",
]


def _invoke(*args: str):
    return CliRunner().invoke(main, ["validate", *args], catch_exceptions=False)


def test_llmservingsim_folder_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "v"
    result = _invoke(str(DATA / "RTXPRO6000_Llama-3.1-8B-small"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "ttft" in result.output and "rtx-pro-6000" in result.output and "validation written to" in result.output
    assert {p.name for p in out.iterdir()} == {"errors.csv", "validation.json", "requests.csv", "ticks.csv",
                                               "report.html"}
    errors = pd.read_csv(out / "errors.csv")
    assert {"ttft", "tpot", "itl", "e2el", "request_throughput", "kv_usage", "running"} <= set(errors["metric"])
    summary = json.loads((out / "validation.json").read_text())
    assert summary["deployment"]["max_num_seqs"] == 8 and summary["kv_basis"] == "reconstructed"
    assert summary["cost_model"]["kind"] == "kernels"  # the GPU has shipped kernel tables
    assert len(pd.read_csv(out / "requests.csv")) == 16
    html = (out / "report.html").read_text()
    assert "<script src=" not in html and len(html) > 1_000_000  # plotly.js inlined, no CDN fetch


def test_vllm_bench_result_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = _invoke(str(DATA / "bench_small.json"), "--out", str(out))
    assert result.exit_code == 0, result.output
    errors = pd.read_csv(out / "errors.csv").set_index(["metric", "stat"])
    assert errors.loc[("itl", "p50"), "basis"] == "recorded" and pd.notna(errors.loc[("itl", "p50"), "sim"])
    assert errors.loc[("kv_usage", "peak"), "basis"] == "recorded"
    summary = json.loads((out / "validation.json").read_text())
    assert summary["deployment"]["num_gpu_blocks"] == 199  # the 200 the engine reported, less its null block


def test_closed_loop_csv_end_to_end(tmp_path: Path) -> None:
    csv = tmp_path / "silicon.csv"
    csv.write_text("\n".join([AIC_HEADER, *AIC_ROWS]) + "\n")
    out = tmp_path / "c"
    result = _invoke(str(csv), "--requests-per-user", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "skipped 1 rows: unknown model 'acme/Uncatalogued-120B'" in result.output
    assert "excluded from MAPE 1 rows" in result.output
    assert "all users start at t=0, 2 requests per user" in result.output
    assert "lockstep" not in result.output and "staggered" not in result.output
    cases = pd.read_csv(out / "cases.csv", keep_default_na=False)
    assert len(cases) == 4 and "start" not in cases.columns  # one simulation per row
    done = cases[(cases["skipped"] == "") & (cases["excluded"] == "")]
    assert len(done) == 1 and float(done["sim_ttft_ms"].iloc[0]) > 0
    assert float(done["sim_requests"].iloc[0]) == 8  # 4 users x 2 requests
    mape = pd.read_csv(out / "mape.csv")
    assert set(mape["model"]) >= {"Qwen/Qwen3-32B", "all"} and "start" not in mape.columns
    summary = json.loads((out / "validation.json").read_text())
    assert summary["client"]["requests_per_user"] == 2 and "ttft_bracket" not in summary


def test_closed_loop_csv_with_no_simulable_row_is_one_line(tmp_path: Path) -> None:
    """Every row an unknown model or a disaggregated run: one line naming the rows and why, exit 2."""
    csv = tmp_path / "unknown.csv"
    csv.write_text("\n".join([
        AIC_HEADER,
        "a,source_file=x.csv; silicon_concurrency=4,vllm,0.12.0,acme/Nope-7B,h100_sxm,,agg,512,32,4,1,50.0,5.0",
        "b,source_file=x.csv; silicon_concurrency=8,vllm,0.12.0,acme/Nope-7B,h100_sxm,,agg,512,32,8,1,60.0,6.0",
        "c,source_file=x.csv; silicon_concurrency=8,vllm,0.12.0,acme/Other-3B,nope_gpu,,agg,512,32,8,1,60.0,6.0",
        "d,source_file=x.csv,vllm,0.12.0,Qwen/Qwen3-32B,h100_sxm,fp8,disagg,512,32,,,300.0,9.0",
    ]) + "\n")
    result = CliRunner().invoke(main, ["validate", str(csv), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    line = result.output
    assert "unknown.csv: none of its 4 rows can be simulated" in line
    assert "rows 2-3: unknown model 'acme/Nope-7B'" in line and "row 4: unknown model 'acme/Other-3B'" in line
    assert "row 5: mode disagg" in line
    assert not (tmp_path / "o").exists()


#: The full column set of aiconfigurator's silicon CSVs (vllm_h100_sxm.csv and its siblings).
AIC_FULL_HEADER = (
    "id,silicon_data_source,backend,backend_version,model_path,system,precision,mode,isl,osl,gemm_quant_mode,"
    "moe_quant_mode,batch_size,tp_size,pp_size,attention_dp_size,moe_tp_size,moe_ep_size,prefill_batch_size,"
    "prefill_num_workers,prefill_tp_size,prefill_pp_size,prefill_attention_dp_size,prefill_moe_tp_size,"
    "prefill_moe_ep_size,decode_batch_size,decode_num_workers,decode_tp_size,decode_pp_size,"
    "decode_attention_dp_size,decode_moe_tp_size,decode_moe_ep_size,silicon_ttft_ms,silicon_tpot_ms")


def test_closed_loop_csv_on_an_unknown_gpu_ends_in_one_line_not_a_keyerror(tmp_path: Path) -> None:
    """Issue #11: every row skipped (a GPU outside the catalog, models outside it) once printed the
    table and died with KeyError ('real_ttft_ms', ...); now one line names the rows and why, exit 2."""
    blank = "," * 13  # the 14 prefill/decode columns, empty as in agg rows
    csv = tmp_path / "vllm_x999.csv"
    csv.write_text("\n".join([
        AIC_FULL_HEADER,
        f"a,source_file=x.csv; silicon_concurrency=4,vllm,0.12.0,Qwen/Qwen3-32B,x999_sxm,,agg,1024,128,,,4,2,1,,1,1,{blank},150.0,18.0",
        f"b,source_file=x.csv; silicon_concurrency=8,vllm,0.12.0,Qwen/Qwen3-32B,x999_sxm,,agg,1024,128,,,8,2,1,,1,1,{blank},160.0,19.0",
        f"c,source_file=x.csv; silicon_concurrency=8,vllm,0.18.0,acme/Unknown-MoE,x999_sxm,fp8,agg,1024,128,fp8,fp8,8,4,1,1,1,4,{blank},90.0,10.0",
    ]) + "\n")
    result = CliRunner().invoke(main, ["validate", str(csv), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output and "KeyError" not in result.output
    assert "vllm_x999.csv: none of its 3 rows can be simulated" in result.output
    assert "rows 2-3: unknown GPU 'x999_sxm'" in result.output and "row 4: unknown model 'acme/Unknown-MoE'" in result.output
    assert not (tmp_path / "o").exists()


def test_closed_loop_rows_with_more_fields_than_the_header_are_one_line(tmp_path: Path) -> None:
    """A row one field longer than the header would shift every column (pandas reads the first
    field as an index): refused in one line rather than misread or a ValueError traceback."""
    csv = tmp_path / "ragged.csv"
    csv.write_text("\n".join([AIC_HEADER, AIC_ROWS[0] + ",extra", AIC_ROWS[3] + ",extra"]) + "\n")
    result = CliRunner().invoke(main, ["validate", str(csv), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "ragged.csv: its rows have more fields than its header names" in result.output


def test_user_mistakes_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(tmp_path / "missing")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "not found" in result.output
    result = runner.invoke(main, ["validate", str(DATA / "bench_small.json"), "--gpu", "nope"])
    assert result.exit_code == 2 and "unknown GPU" in result.output
    existing = tmp_path / "full"
    existing.mkdir()
    (existing / "x").write_text("x")
    result = runner.invoke(main, ["validate", str(DATA / "bench_small.json"), "--out", str(existing)])
    assert result.exit_code == 2 and "already exists" in result.output
