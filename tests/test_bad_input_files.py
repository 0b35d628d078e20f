"""Bad input files, every kind (issue #13): sweep specs, traces, length files, model configs,
calibrations, profiles and run directories given to `report`. Each ends in exit 2 and one stderr
line naming the file or field, before any simulation, leaving nothing behind."""

from __future__ import annotations

import gzip
import json
import math
from importlib import resources
from pathlib import Path

import pytest

from bad_input_helpers import SIMULATE, assert_refused

CALIBRATION = Path(__file__).resolve().parents[1] / "calibration" / "tiny-llama-cpu.json"
SWEEP_BASE = "deployment:\n  model: deepseek-r1-distill-qwen-1.5b\n  gpu: h100\nworkload:\n  num_requests: 5\n"

SWEEP_CASES = {
    "tp 3": (SWEEP_BASE + "  max_tokens: 64\n").replace("gpu: h100\n", "gpu: h100\n  tp: 3\n"),
    "tp list": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  tp: [1, 3]\n"),
    "tp 0": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  tp: 0\n"),
    "block_size 7": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  block_size: 7\n"),
    "gpu_memory_utilization 2": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  gpu_memory_utilization: 2\n"),
    "replicas 0": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  replicas: 0\n"),
    "max_num_seqs 0": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  max_num_seqs: [0, 8]\n"),
    "quantization": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  quantization: bogus\n"),
    "kv_cache_dtype": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  kv_cache_dtype: [auto, bogus]\n"),
    "model": SWEEP_BASE.replace("deepseek-r1-distill-qwen-1.5b", "bogus-model-name"),
    "gpu": SWEEP_BASE.replace("gpu: h100", "gpu: bogus-gpu"),
    "router": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  router: bogus\n"),
    "rate -1": SWEEP_BASE + "  rate: -1\n",
    "rate nan": SWEEP_BASE + "  rate: .nan\n",
    "num_requests huge": SWEEP_BASE.replace("num_requests: 5", "num_requests: 10000000000"),
    "think_time -5": SWEEP_BASE + "  arrival: closed-loop\n  think_time_s: -5\n",
    "cv 0": SWEEP_BASE + "  cv: 0\n",
    "trace missing": SWEEP_BASE + "  trace: nope.csv\n",
    "lengths_file missing": SWEEP_BASE + "  lengths_file: nope.csv\n",
    "dataset": SWEEP_BASE + "  dataset: bogus-dataset\n",
    "arrival": SWEEP_BASE + "  arrival: bogus\n",
    "seeds -1": SWEEP_BASE + "seeds: [-1]\n",
    "seed text": SWEEP_BASE + "seed: abc\n",
    "seeds empty": SWEEP_BASE + "seeds: []\n",
    "straggler_factor": SWEEP_BASE + "straggler_factor: -1\n",
    "duration_s": SWEEP_BASE.replace("  num_requests: 5\n", "") + "duration_s: -1\n",
    "slos": SWEEP_BASE + "slos: {ttft_p99: nan}\n",
    "slos list": SWEEP_BASE + "slos: [1, 2]\n",
    "unknown top": SWEEP_BASE + "bogus_key: 1\n",
    "unknown field": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  bogus_field: 1\n"),
    "wrong type": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  tp: abc\n"),
    "repeated": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  tp: [1, 1]\n"),
    "mapping value": SWEEP_BASE.replace("gpu: h100\n", "gpu: h100\n  tp: {a: 1}\n"),
    "not a mapping": "- 1\n- 2\n",
    "bad yaml": "deployment: [\n",
    "tabs": "deployment:\n\tmodel: x\n",
    "python tag": "deployment: !!python/object/apply:os.system [echo hi]\n",
    "alias bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)),
}


@pytest.mark.parametrize("name", list(SWEEP_CASES))
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_sweep_spec_refused(tmp_path: Path, name: str, dry_run: bool) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SWEEP_CASES[name])
    args = ["sweep", spec, "--out", tmp_path / "sw", "--workers", "1"] + (["--dry-run"] if dry_run else [])
    assert_refused(tmp_path, args, ("sweep spec", "spec.yaml"))


@pytest.mark.parametrize("out", ["/proc/x", "/dev/null"])
def test_sweep_out_refused(tmp_path: Path, out: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SWEEP_BASE)
    assert_refused(tmp_path, ["sweep", spec, "--out", out, "--workers", "1"], "--out")


def _w(text: str | bytes):
    return lambda path: path.write_bytes(text if isinstance(text, bytes) else text.encode())


GENERIC = "arrival_s,prompt_tokens,output_tokens\n"
TRACE_CASES = {
    "t.csv.gz": _w(GENERIC + "0,10,10\n"),  # not gzip
    "t2.csv.gz": _w(gzip.compress(GENERIC.encode())[:20]),  # truncated gzip
    "t.json": _w("[1, 2, 3]"),
    "t2.json": _w('{"input_lens": 5, "output_lens": 3, "start_times": 1}'),
    "t3.json": _w('{"input_lens": [1, 2], "output_lens": [3], "start_times": [0, 1]}'),
    "t4.json": _w('{"input_lens": ["a", "b"], "output_lens": [3, 4], "start_times": [0, 1]}'),
    "t5.json": _w("5"),
    "t6.json": _w("{not json"),
    "t7.json": _w('{"input_lens": [1], "output_lens": [1]}'),
    "huge.csv": _w(GENERIC + "0,1e20,10\n"),
    "neg.csv": _w(GENERIC + "0,-5,10\n"),
    "zero.csv": _w(GENERIC + "0,10,0\n"),
    "frac.csv": _w(GENERIC + "0,10.5,10\n"),
    "nan.csv": _w(GENERIC + "nan,10,10\n"),
    "inf.csv": _w(GENERIC + "inf,10,10\n"),
    "text.csv": _w(GENERIC + "soon,10,10\n"),
    "empty.csv": _w(""),
    "header.csv": _w(GENERIC),
    "cols.csv": _w("a,b,c\n1,2,3\n"),
    "bin.csv": _w(bytes(range(256)) * 4),
    "bad.parquet": _w(b"PAR1 not really"),
    "bad.jsonl": _w('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n{broken\n'),
    "list.jsonl": _w("[1, 2]\n"),
    "latin.jsonl": _w(b'{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1, "dataset": "\xe9"}\n'),
    "hash.jsonl": _w('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": "x"}\n'),
    "mooncake.jsonl": _w('{"timestamp": "x", "input_length": 10, "output_length": 5}\n'),
    "burst.csv": _w("Timestamp,Request tokens,Response tokens\n0,abc,5\n"),
    "azure.csv": _w("TIMESTAMP,ContextTokens,GeneratedTokens\nnot-a-date,10,5\n"),
}


@pytest.mark.parametrize("name", list(TRACE_CASES))
@pytest.mark.parametrize("flag", ["--trace", "--lengths-file"])
def test_damaged_workload_file_refused(tmp_path: Path, name: str, flag: str) -> None:
    path = tmp_path / name
    TRACE_CASES[name](path)
    if flag == "--lengths-file" and name in ("t7.json",):
        pytest.skip("a vllm bench result without start_times is a valid lengths file")
    assert_refused(tmp_path, [*SIMULATE, "--out", tmp_path / "run", flag, path], name)


def _catalog_config(name: str = "qwen3-8b", **changes) -> dict:
    raw = json.loads(resources.files("rllmsim.specs").joinpath("models", f"{name}.json").read_text())
    raw.pop("_rllmsim")
    raw.update(changes)
    return raw


MODEL_CASES = {
    "mlp_only_layers 5": _catalog_config("qwen3-30b-a3b", mlp_only_layers=5),
    "heads 0": _catalog_config(num_attention_heads=0),
    "heads text": _catalog_config(num_attention_heads="many"),
    "hidden negative": _catalog_config(hidden_size=-1),
    "layers null": _catalog_config(num_hidden_layers=None),
    "layers float": _catalog_config(num_hidden_layers=2.5),
    "vocab nan": _catalog_config(vocab_size=float("nan")),
    "context 0": _catalog_config(max_position_embeddings=0),
    "architectures text": _catalog_config(architectures="Qwen3ForCausalLM"),
    "list": [1, 2],
    "kv heads 3": _catalog_config(num_key_value_heads=3),
}


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_damaged_model_config_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "model" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(MODEL_CASES[name]))
    assert_refused(tmp_path, [*SIMULATE, "--out", tmp_path / "run", "--model", path], ("config", "model"))


def _calibration(**changes) -> dict:
    doc = json.loads(CALIBRATION.read_text())
    for dotted, value in changes.items():
        target, *path, last = [doc, *dotted.split("__")]
        for part in path:
            target = target[part]
        target[last] = value
    return doc


CALIBRATION_CASES = {
    "overhead negative": _calibration(overhead_s=-1),
    "overhead nan": _calibration(overhead_s=math.nan),
    "overhead inf": _calibration(overhead_s=math.inf),
    "overhead text": _calibration(overhead_s="fast"),
    "overhead missing": {k: v for k, v in _calibration().items() if k != "overhead_s"},
    "coefficient negative": _calibration(coefficients__decode_tokens=-0.001),
    "coefficient nan": _calibration(coefficients__prefill_tokens=math.nan),
    "coefficient inf": _calibration(coefficients__prefill_seqs=math.inf),
    "coefficient text": _calibration(coefficients__decode_kv_tokens="x"),
    "coefficient bool": _calibration(coefficients__decode_kv_tokens=True),
    "coefficients list": _calibration(coefficients=[1, 2]),
    "all zero": _calibration(overhead_s=0, coefficients={"decode_tokens": 0}),
    "unknown feature": _calibration(coefficients__bogus_feature=0.1),
    "tree index": _calibration(residual__children_left=[99] * 3),
    "tree feature": _calibration(residual__feature=[99] * 3),
    "tree threshold nan": _calibration(residual__threshold=[math.nan] * 3),
    "tree lengths": _calibration(residual__value=[0.0]),
    "tree type": _calibration(residual=[1, 2]),
    "tree features": _calibration(residual__features=["bogus"]),
    "metadata list": _calibration(profile__metadata=[1]),
    "format": _calibration(format="bogus"),
    "list": [1, 2, 3],
    "number": 5,
}


@pytest.mark.parametrize("name", list(CALIBRATION_CASES))
def test_tampered_calibration_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(CALIBRATION_CASES[name]))
    args = ["simulate", "--cost-model", path, "--dataset", "gsm8k", "--rate", "2", "--num-requests", "5",
            "--max-tokens", "64", "--out", tmp_path / "run"]
    assert_refused(tmp_path, args, ("cal.json", "calibration"))


def test_damaged_calibration_json_text_refused(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text("{broken")
    assert_refused(tmp_path, [*SIMULATE, "--cost-model", path, "--out", tmp_path / "run"], "cal.json")


PROFILE_CASES = {
    "list": ("[1, 2]", True),
    "not json": ("{broken", True),
    "format": ('{"format": "bogus"}', True),
    "no parquet": ('{"format": "bogus"}', False),
}


@pytest.mark.parametrize("name", list(PROFILE_CASES))
def test_damaged_profile_refused(tmp_path: Path, name: str) -> None:
    meta, with_parquet = PROFILE_CASES[name]
    (tmp_path / "prof.json").write_text(meta)
    if with_parquet:
        (tmp_path / "prof.parquet").write_bytes(b"PAR1 broken")
    assert_refused(tmp_path, ["calibrate", tmp_path / "prof", "--out", tmp_path / "cal"], "prof")
