"""Length distributions: every dataset sane, budgets cap, reported means held, mixtures labelled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rllmsim.errors import ConfigError
from rllmsim.rng import RngStreams
from rllmsim.workload.lengths import (
    EmpiricalLengths,
    dataset_names,
    get_dataset,
    load_datasets,
    sample_lengths,
    sample_mixture,
)

DATA = Path(__file__).parent / "data"
REASONING = ["gsm8k", "math-500", "aime-2024", "gpqa-diamond"]
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "validation" / "llmservingsim-vllm0.19"


def _rng(seed: int = 0) -> np.random.Generator:
    return RngStreams(seed).stream("lengths")


def test_required_datasets_exist_with_provenance() -> None:
    names = dataset_names()
    for name in REASONING + ["sharegpt"] + [f"{d}-chat" for d in REASONING]:
        assert name in names
        ds = get_dataset(name)
        assert len(ds.provenance) > 80 and ds.model
    for name in REASONING:
        assert get_dataset(name).kind == "reasoning"
        assert "2510.18672" in get_dataset(name).provenance


@pytest.mark.parametrize("name", dataset_names())
@pytest.mark.parametrize("max_tokens", [None, 1, 512, 4096])
def test_lengths_positive_and_capped(name: str, max_tokens: int | None) -> None:
    prompt, output = sample_lengths(name, 5000, _rng(), max_tokens=max_tokens)
    ds = get_dataset(name)
    assert prompt.dtype == np.int64 and output.dtype == np.int64
    assert prompt.shape == output.shape == (5000,)
    assert prompt.min() >= 1 and output.min() >= 1
    assert prompt.max() <= ds.prompt.high and output.max() <= ds.output.high
    if max_tokens is not None:
        assert output.max() <= max_tokens


@pytest.mark.parametrize("name", dataset_names())
def test_means_match_the_figures_they_were_chosen_for(name: str) -> None:
    ds = get_dataset(name)
    prompt, output = sample_lengths(name, 200_000, _rng(1))
    if ds.reported_mean is not None:
        assert output.mean() == pytest.approx(ds.reported_mean, rel=0.10)
    if ds.reported_prompt_mean is not None:
        assert prompt.mean() == pytest.approx(ds.reported_prompt_mean, rel=0.10)


def test_reasoning_outputs_dwarf_chat_outputs_on_the_same_questions() -> None:
    for name in REASONING:
        p_r, o_r = sample_lengths(name, 20_000, _rng(2))
        p_c, o_c = sample_lengths(f"{name}-chat", 20_000, _rng(2))
        assert o_r.mean() > 3 * o_c.mean()
        assert np.median(p_r) == pytest.approx(np.median(p_c), rel=0.05)
    aime = sample_lengths("aime-2024", 20_000, _rng(3))[1].mean()
    gsm = sample_lengths("gsm8k", 20_000, _rng(3))[1].mean()
    assert aime > 5 * gsm


def test_budget_truncates_long_reasoning() -> None:
    _, output = sample_lengths("aime-2024", 10_000, _rng(), max_tokens=8192)
    assert output.max() == 8192
    assert (output == 8192).mean() > 0.3  # most AIME chains run past an 8k budget


def test_sharegpt_follows_vllm_bench_filter() -> None:
    prompt, output = sample_lengths("sharegpt", 50_000, _rng())
    assert prompt.min() >= 4 and output.min() >= 4
    assert prompt.max() <= 1024 and (prompt + output).max() <= 2048


def test_determinism_and_aliases() -> None:
    a = sample_lengths("aime24", 100, _rng(9))
    b = sample_lengths("aime-2024", 100, _rng(9))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = sample_lengths("aime-2024", 100, _rng(10))
    assert not np.array_equal(a[1], c[1])


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of: .*math-500"):
        sample_lengths("math-5000", 10, _rng())


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_budget(bad) -> None:
    with pytest.raises(ConfigError, match="max_tokens"):
        sample_lengths("gsm8k", 10, _rng(), max_tokens=bad)


def test_mixture_labels_and_proportions() -> None:
    weights = {"math-500": 0.5, "aime-2024": 0.3, "gsm8k": 0.2, "sharegpt": 0.0}
    prompt, output, labels = sample_mixture(weights, 20_000, _rng(), max_tokens=16384)
    assert prompt.shape == output.shape == labels.shape == (20_000,)
    assert set(labels) == {"math-500", "aime-2024", "gsm8k"}
    for name, w in weights.items():
        assert (labels == name).mean() == pytest.approx(w, abs=0.02)
    assert output.max() <= 16384
    assert output[labels == "aime-2024"].mean() > 2 * output[labels == "math-500"].mean()
    again = sample_mixture(weights, 20_000, _rng(), max_tokens=16384)
    np.testing.assert_array_equal(labels, again[2])
    np.testing.assert_array_equal(output, again[1])


@pytest.mark.parametrize(
    "weights", [{}, {"math-500": -1.0}, {"math-500": 0.0}, {"math-500": float("nan")}, {"nope": 1.0}]
)
def test_bad_mixture(weights) -> None:
    with pytest.raises(ConfigError):
        sample_mixture(weights, 10, _rng())


def test_empirical_lengths_from_csv_aliases_keep_pairs() -> None:
    emp = EmpiricalLengths.from_file(DATA / "lengths_only.csv")
    prompt, output = emp.sample(1000, _rng())
    pairs = set(zip(prompt.tolist(), output.tolist()))
    assert pairs == {(100, 1000), (200, 3000), (300, 5000)}
    _, capped = sample_lengths(emp, 1000, _rng(), max_tokens=2000)
    assert capped.max() == 2000


def test_empirical_lengths_from_parquet_and_jsonl(tmp_path: Path) -> None:
    pq = tmp_path / "lens.parquet"
    pd.DataFrame({"prompt_tokens": [10, 20], "output_tokens": [30, 40]}).to_parquet(pq)
    prompt, output = EmpiricalLengths.from_file(pq).sample(200, _rng())
    assert set(zip(prompt.tolist(), output.tolist())) == {(10, 30), (20, 40)}
    js = tmp_path / "lens.jsonl"
    js.write_text("\n".join(json.dumps({"input_toks": p, "output_toks": o}) for p, o in [(5, 6), (7, 8)]))
    prompt, _ = EmpiricalLengths.from_file(js).sample(100, _rng())
    assert set(prompt.tolist()) == {5, 7}


def test_empirical_lengths_from_vllm_bench_results_drop_failures() -> None:
    for name in ("vllm_bench_detailed.json", "vllm_bench_no_start_times.json"):
        emp = EmpiricalLengths.from_file(DATA / name)
        assert emp.output_tokens.min() > 0
    emp = EmpiricalLengths.from_file(DATA / "vllm_bench_detailed.json")
    assert sorted(emp.prompt_tokens.tolist()) == [88, 120, 150, 300]


@pytest.mark.skipif(not REAL.is_dir(), reason="shared validation data not present")
def test_empirical_lengths_from_real_llmservingsim_requests() -> None:
    emp = EmpiricalLengths.from_file(REAL / "RTXPRO6000_Llama-3.1-8B" / "requests.jsonl")
    assert emp.prompt_tokens.size == 300 and emp.output_tokens.min() >= 1


def test_empirical_lengths_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("input_len,output_len\n10,20\n30,abc\n")
    with pytest.raises(ConfigError, match=r"bad\.csv: line 3: field 'output_len'"):
        EmpiricalLengths.from_file(bad)


def test_custom_datasets_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "ds.toml"
    bad.write_text('[datasets.x]\nprompt = { dist = "lognormal", median = 10, sigma = 0.5, max = 100 }\n'
                   'output = { dist = "weibull", median = 10, sigma = 0.5, max = 100 }\n')
    with pytest.raises(ConfigError, match=r"datasets\.x\]\.output: dist must be"):
        load_datasets(bad)
    good = tmp_path / "ok.toml"
    good.write_text('[datasets.fixed]\nprompt = { dist = "constant", value = 64, max = 100 }\n'
                    'output = { dist = "constant", value = 256, max = 1000 }\n')
    ds = load_datasets(good)[0]["fixed"]
    prompt, output = ds.sample(3, _rng())
    assert prompt.tolist() == [64, 64, 64] and output.tolist() == [256, 256, 256]
