"""The steady-state check: an open-loop run whose completions fall behind its arrivals says so,
and says whether the deployment is overloaded or the run too short to tell."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.metrics.load import load_check, load_warning


def _table(arrival: np.ndarray, finish: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"arrival_s": arrival, "finish_s": finish})


def test_a_deployment_that_keeps_up_is_steady() -> None:
    arrival = np.arange(100.0)  # one a second for 99 s, each done 5 s later
    load = load_check(_table(arrival, arrival + 5.0))
    # second half (49.5, 99]: arrivals 50..99 (50), finishes of arrivals 45..94 (50)
    assert load == {"offered_requests_per_s": pytest.approx(1.0), "completed_requests_per_s": pytest.approx(50 / 49.5),
                    "in_flight_growth": 0, "kept_up": True, "first_requests_e2el_p50_s": 5.0,
                    "arrival_window_s": 99.0}
    assert load_warning(load) is None


def test_completions_at_half_the_arrival_rate_are_overload() -> None:
    arrival = np.arange(100.0)
    load = load_check(_table(arrival, 2.0 * arrival + 1.0))  # request i done at 2i + 1: E2EL i + 1
    # finishes in (49.5, 99]: i = 25..49 (25) against 50 arrivals: 25 more in flight
    assert load["in_flight_growth"] == 25 and not load["kept_up"]
    assert load["completed_requests_per_s"] == pytest.approx(25 / 49.5)
    assert load["first_requests_e2el_p50_s"] == 5.5  # the first ten: E2EL 1..10
    warning = load_warning(load)
    assert "0.51 req/s completed" in warning and "overloaded: lower --rate or add --replicas" in warning


def test_requests_longer_than_the_run_say_the_run_is_too_short() -> None:
    arrival = np.arange(10.0)
    load = load_check(_table(arrival, arrival + 60.0))  # every request lasts 60 s, arrivals span 9 s
    assert load["in_flight_growth"] == 5 and not load["kept_up"]
    assert "first requests alone took 60.0 s" in load_warning(load) and "raise --num-requests" in load_warning(load)


def test_unfinished_requests_count_as_not_completed() -> None:
    load = load_check(_table(np.arange(10.0), np.full(10, np.nan)))
    assert load["in_flight_growth"] == 5 and not load["kept_up"] and load["first_requests_e2el_p50_s"] == np.inf


def test_no_arrival_window_means_no_check() -> None:
    assert load_check(_table(np.zeros(5), np.ones(5))) is None
    assert load_check(_table(np.array([3.0]), np.array([4.0]))) is None


def test_simulate_warns_when_the_offered_load_is_not_served(tmp_path) -> None:
    runner = CliRunner()
    busy = runner.invoke(main, ["simulate", "--rate", "6", "--num-requests", "1200", "--out", str(tmp_path / "a")])
    calm = runner.invoke(main, ["simulate", "--rate", "1.5", "--num-requests", "300", "--out", str(tmp_path / "b")])
    short = runner.invoke(main, ["simulate", "--rate", "1.5", "--num-requests", "20", "--out", str(tmp_path / "d")])
    assert busy.exit_code == 0 and calm.exit_code == 0 and short.exit_code == 0
    assert "warning: not a steady state: 6.08 req/s offered" in busy.output and "overloaded" in busy.output
    assert "steady state" not in calm.output
    assert "raise --num-requests" in short.output
    closed = runner.invoke(main, ["simulate", "--arrival", "closed-loop", "--concurrency", "4", "--num-requests", "20",
                                  "--out", str(tmp_path / "c")])
    assert closed.exit_code == 0
    assert "load" not in json.loads((tmp_path / "c" / "summary.json").read_text())  # a closed loop adapts its load
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["load"]["kept_up"] is False
