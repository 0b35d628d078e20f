"""Trace readers and the Request table contract: every format, time_scale, malformed rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rllmsim.errors import ConfigError
from rllmsim.workload.table import REQUEST_COLUMNS, make_request_table, validate_request_table
from rllmsim.workload.traces import TRACE_FORMATS, read_length_pairs, read_trace

DATA = Path(__file__).parent / "data"
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "validation" / "llmservingsim-vllm0.19"


def _check_contract(df: pd.DataFrame) -> None:
    assert tuple(df.columns[: len(REQUEST_COLUMNS)]) == REQUEST_COLUMNS
    assert df["request_id"].tolist() == list(range(len(df)))
    assert df["arrival_s"].iloc[0] == 0.0 and df["arrival_s"].is_monotonic_increasing
    for col in ("request_id", "prompt_tokens", "output_tokens", "prefix_group", "prefix_tokens"):
        assert df[col].dtype == np.int64
    assert df["arrival_s"].dtype == np.float64 and df["dataset"].dtype == "string"
    validate_request_table(df, "roundtrip")


# ------------------------------------------------------------------------- the formats ----


def test_mooncake() -> None:
    df = read_trace(DATA / "mooncake_small.jsonl")
    _check_contract(df)
    assert df.attrs["trace"]["format"] == "mooncake"
    np.testing.assert_allclose(df["arrival_s"], [0.0, 0.0, 1.5, 3.052, 8.0])
    assert df["prompt_tokens"].tolist() == [1100, 1300, 600, 700, 300]
    assert df["hash_ids"].tolist() == [[0, 1, 2], [0, 1, 3], [0, 6], [4, 5], [7]]
    # the three requests starting with block 0 share exactly one 512-token block
    assert df["prefix_group"].tolist()[:3] == [0, 0, 0] and df["prefix_group"].tolist()[3:] == [-1, -1]
    assert df["prefix_tokens"].tolist() == [512, 512, 512, 0, 0]
    assert (df["dataset"] == "mooncake_small").all()


def test_vllm_bench_detailed_uses_send_times_and_drops_failures() -> None:
    df = read_trace(DATA / "vllm_bench_detailed.json")
    _check_contract(df)
    info = df.attrs["trace"]
    assert info["format"] == "vllm-bench" and info["dropped"] == 1
    # arrival = start_time - queue_time: 1000.25, 1000.5, 1001.9, 1002.5
    np.testing.assert_allclose(df["arrival_s"], [0.0, 0.25, 1.65, 2.25])
    assert df["prompt_tokens"].tolist() == [120, 300, 88, 150]
    assert df["output_tokens"].tolist() == [2048, 512, 1024, 700]


def test_vllm_bench_without_start_times_is_refused_but_usable_for_lengths() -> None:
    path = DATA / "vllm_bench_no_start_times.json"
    with pytest.raises(ConfigError, match="start_times.*EmpiricalLengths.*request_rate=4.0"):
        read_trace(path)
    prompt, output = read_length_pairs(path)
    assert prompt.tolist() == [120, 95, 300] and output.tolist() == [2048, 333, 512]


def test_burstgpt_drops_failed_rows_and_says_so() -> None:
    df = read_trace(DATA / "burstgpt_small.csv")
    _check_contract(df)
    info = df.attrs["trace"]
    assert info["format"] == "burstgpt" and info["dropped"] == 2
    assert any("0 response tokens" in note for note in info["notes"])
    np.testing.assert_allclose(df["arrival_s"], [0.0, 113.0, 120.0, 155.0])
    assert df["output_tokens"].tolist() == [18, 276, 209, 512]


def test_azure() -> None:
    df = read_trace(DATA / "azure_small.csv")
    _check_contract(df)
    assert df.attrs["trace"]["format"] == "azure" and df.attrs["trace"]["dropped"] == 1
    np.testing.assert_allclose(df["arrival_s"], [0.0, 4.314579, 5.41941], atol=1e-6)
    assert df["prompt_tokens"].tolist() == [374, 396, 91]


def test_llmservingsim_fixture() -> None:
    df = read_trace(DATA / "llmservingsim_small.jsonl", dataset="sharegpt")
    _check_contract(df)
    assert df.attrs["trace"]["format"] == "llmservingsim"
    np.testing.assert_allclose(df["arrival_s"], [0.0, 0.2850590, 0.4174759], atol=1e-6)
    assert (df["dataset"] == "sharegpt").all()


@pytest.mark.skipif(not REAL.is_dir(), reason="shared validation data not present")
@pytest.mark.parametrize("run", ["RTXPRO6000_Llama-3.1-8B", "RTXPRO6000_Qwen3-32B"])
def test_llmservingsim_real_requests(run: str) -> None:
    path = REAL / run / "requests.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    df = read_trace(path)
    _check_contract(df)
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(df) == len(raw) == 300
    assert df["prompt_tokens"].sum() == sum(r["input_toks"] for r in raw)
    assert df["output_tokens"].sum() == sum(r["output_toks"] for r in raw)
    span = max(r["arrival_time"] for r in raw) - min(r["arrival_time"] for r in raw)
    assert df["arrival_s"].iloc[-1] == pytest.approx(span)
    assert 8.0 < len(df) / span < 12.0  # the README's ~10 req/s


def test_generic_csv_with_dataset_and_prefixes() -> None:
    df = read_trace(DATA / "generic_small.csv")
    _check_contract(df)
    assert df.attrs["trace"]["format"] == "generic"
    assert df["dataset"].tolist() == ["aime-2024", "math-500", "gsm8k"]
    np.testing.assert_allclose(df["arrival_s"], [0.0, 0.5, 2.0])
    assert df["prefix_group"].tolist() == [0, 0, -1] and df["prefix_tokens"].tolist() == [40, 40, 0]


def test_generic_jsonl_aliases_and_parquet(tmp_path: Path) -> None:
    df = read_trace(DATA / "generic_small.jsonl")
    assert df["prompt_tokens"].tolist() == [32, 64] and df["arrival_s"].tolist() == [0.0, 2.0]
    pq = tmp_path / "trace.parquet"
    pd.DataFrame({"arrival_s": [5.0, 6.0], "prompt_tokens": [1, 2], "output_tokens": [3, 4],
                  "hash_ids": [[1, 2], [1, 3]]}).to_parquet(pq)
    df = read_trace(pq)
    _check_contract(df)
    assert df["hash_ids"].tolist() == [[1, 2], [1, 3]] and df["arrival_s"].tolist() == [0.0, 1.0]


def test_every_format_has_a_fixture_read_above() -> None:
    assert set(TRACE_FORMATS) == {"mooncake", "vllm-bench", "burstgpt", "azure", "llmservingsim", "generic"}


# ------------------------------------------------------------------------- time_scale ----


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_time_scale_multiplies_shifted_times(scale: float) -> None:
    base = read_trace(DATA / "mooncake_small.jsonl")
    scaled = read_trace(DATA / "mooncake_small.jsonl", time_scale=scale)
    np.testing.assert_allclose(scaled["arrival_s"], base["arrival_s"] * scale)
    assert scaled["prompt_tokens"].tolist() == base["prompt_tokens"].tolist()


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), "2"])
def test_bad_time_scale(scale) -> None:
    with pytest.raises(ConfigError, match="time_scale"):
        read_trace(DATA / "mooncake_small.jsonl", time_scale=scale)


# -------------------------------------------------------------------- malformed input ----


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line_error(path: Path, pattern: str, **kw) -> None:
    with pytest.raises(ConfigError, match=pattern) as exc:
        read_trace(path, **kw)
    assert "\n" not in str(exc.value)


def test_missing_field_names_file_and_line() -> None:
    _one_line_error(DATA / "bad_mooncake.jsonl",
                    r"bad_mooncake\.jsonl: line 4: field 'output_length'.*missing")


def test_malformed_rows(tmp_path: Path) -> None:
    rec = {"input_toks": 10, "output_toks": 5, "arrival_time": 1.0}
    lines = [json.dumps(rec), json.dumps({**rec, "output_toks": 0})]
    _one_line_error(_write(tmp_path, "zero.jsonl", "\n".join(lines)),
                    r"zero\.jsonl: line 2: field 'output_toks' must be an integer >= 1 and <= 2147483647, got 0")
    lines = [json.dumps(rec), json.dumps({**rec, "input_toks": -3})]
    _one_line_error(_write(tmp_path, "neg.jsonl", "\n".join(lines)), r"line 2: field 'input_toks'.*got -3")
    lines = [json.dumps(rec), json.dumps({**rec, "arrival_time": "soon"})]
    _one_line_error(_write(tmp_path, "nan.jsonl", "\n".join(lines)),
                    r"line 2: field 'arrival_time' must be a number, got 'soon'")
    _one_line_error(_write(tmp_path, "json.jsonl", json.dumps(rec) + "\n{oops\n"),
                    r"json\.jsonl: line 2: not valid JSON")
    csv = "Timestamp,Model,Request tokens,Response tokens\n1,ChatGPT,10,5\n2,ChatGPT,ten,5\n"
    _one_line_error(_write(tmp_path, "b.csv", csv), r"b\.csv: line 3: field 'Request tokens'.*'ten'")
    csv = "Timestamp,Model,Request tokens,Response tokens\n1,ChatGPT,10,5\n2,ChatGPT,10,-5\n"
    _one_line_error(_write(tmp_path, "c.csv", csv), r"c\.csv: line 3: field 'Response tokens'.*-5")
    csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,10,5\nyesterday,10,5\n"
    _one_line_error(_write(tmp_path, "az.csv", csv), r"az\.csv: line 3: field 'TIMESTAMP'")
    csv = "arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,10.5,5\n"
    _one_line_error(_write(tmp_path, "g.csv", csv),
                    r"g\.csv: line 3: field 'prompt_tokens' must be an integer")
    csv = "arrival_s,prompt_tokens,output_tokens,prefix_group,prefix_tokens\n0,10,5,0,20\n"
    _one_line_error(_write(tmp_path, "p.csv", csv),
                    r"p\.csv: row 0: column 'prefix_tokens' must be <= prompt_tokens")


def test_unusable_files(tmp_path: Path) -> None:
    _one_line_error(tmp_path / "nope.jsonl", "trace file not found")
    _one_line_error(_write(tmp_path, "what.csv", "a,b\n1,2\n"), r"what\.csv: unknown trace format")
    _one_line_error(DATA / "burstgpt_small.csv", r"not a mooncake trace, missing timestamp", fmt="mooncake")
    _one_line_error(DATA / "burstgpt_small.csv", r"unknown trace format 'csv'", fmt="csv")
    only_failures = "Timestamp,Model,Request tokens,Response tokens\n1,ChatGPT,10,0\n"
    _one_line_error(_write(tmp_path, "f.csv", only_failures), r"f\.csv: no usable requests")
    _one_line_error(_write(tmp_path, "x.json", "[1, 2]"), r"x\.json: expected a JSON object")
    _one_line_error(_write(tmp_path, "broken.parquet", "not parquet"),
                    r"broken\.parquet: not a readable Parquet")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    _one_line_error(tmp_path / "bin.jsonl", r"bin\.jsonl: not UTF-8")
    rows = ['{"arrival_s": 0, "prompt_tokens": 4, "output_tokens": 4, "hash_ids": [1]}',
            '{"arrival_s": 1, "prompt_tokens": 4, "output_tokens": 4, "hash_ids": "abc"}']
    _one_line_error(_write(tmp_path, "h.jsonl", "\n".join(rows)), r"h\.jsonl: line 2: field 'hash_ids'")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("mooncake_small.jsonl", "mooncake"), ("vllm_bench_detailed.json", "vllm-bench"),
     ("burstgpt_small.csv", "burstgpt"), ("azure_small.csv", "azure"),
     ("llmservingsim_small.jsonl", "llmservingsim"), ("generic_small.csv", "generic")],
)
def test_explicit_format_equals_auto(name: str, fmt: str) -> None:
    auto, forced = read_trace(DATA / name), read_trace(DATA / name, fmt=fmt)
    assert auto.attrs["trace"]["format"] == fmt
    pd.testing.assert_frame_equal(auto, forced)


# ----------------------------------------------------------------- the table contract ----


def test_make_request_table_sorts_and_types() -> None:
    df = make_request_table([2.0, 0.0, 1.0], [10, 20, 30], [1, 2, 3], "math-500",
                            prefix_group=[-1, 4, 4], prefix_tokens=[0, 8, 8])
    _check_contract(df)
    assert df["prompt_tokens"].tolist() == [20, 30, 10]
    assert df["prefix_group"].tolist() == [4, 4, -1]
    assert "hash_ids" not in df.columns


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"arrival_s": [0.0, 2.0, 1.0]}, r"row 2: column 'arrival_s' must be sorted"),
        ({"arrival_s": [-1.0, 2.0, 3.0]}, r"row 0: column 'arrival_s' must be >= 0"),
        ({"request_id": [0, 2, 1]}, r"row 1: column 'request_id'"),
        ({"output_tokens": [1, 0, 1]}, r"row 1: column 'output_tokens' must be >= 1"),
        ({"prompt_tokens": [1, 2.5, 1]}, r"row 1: column 'prompt_tokens' must be a whole number"),
        ({"prefix_tokens": [0, 0, 1]}, r"row 2: column 'prefix_tokens' must be 0 when prefix_group is -1"),
        ({"dataset": ["a", "", "c"]}, r"row 1: column 'dataset'"),
    ],
)
def test_validate_request_table_names_first_bad_row(change: dict, pattern: str) -> None:
    df = pd.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 1.0, 2.0], "prompt_tokens": [5, 5, 5],
                       "output_tokens": [1, 2, 3], "dataset": ["a", "b", "c"],
                       "prefix_group": [-1, -1, -1], "prefix_tokens": [0, 0, 0]})
    for k, v in change.items():
        df[k] = v
    with pytest.raises(ConfigError, match=f"mytable: {pattern}" if pattern.startswith("row") else pattern):
        validate_request_table(df, "mytable")


def test_validate_request_table_missing_column() -> None:
    with pytest.raises(ConfigError, match="lacks column.*prefix_group"):
        validate_request_table(pd.DataFrame({"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [1],
                                             "output_tokens": [1], "dataset": ["x"]}), "t")
