"""The overload check: an open-loop run whose completions fall behind its arrivals says so."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from rllmsim.cli import main
from rllmsim.metrics.load import load_check, overload_warning


def _table(arrival: np.ndarray, finish: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"arrival_s": arrival, "finish_s": finish})


def test_a_deployment_that_keeps_up_is_not_overloaded() -> None:
    arrival = np.arange(100.0)  # one a second for 99 s, each done 5 s later
    load = load_check(_table(arrival, arrival + 5.0))
    # second half (49.5, 99]: arrivals 50..99 (50), finishes of arrivals 45..94 (50)
    assert load == {"offered_requests_per_s": pytest.approx(99 / 99), "completed_requests_per_s": pytest.approx(50 / 49.5),
                    "in_flight_growth": 0, "overloaded": False}
    assert overload_warning(load) is None


def test_completions_at_half_the_arrival_rate_are_overloaded() -> None:
    arrival = np.arange(100.0)
    load = load_check(_table(arrival, 2.0 * arrival + 1.0))  # request i done at 2i + 1
    # finishes in (49.5, 99]: i = 25..49 (25) against 50 arrivals: 25 more in flight
    assert load["in_flight_growth"] == 25 and load["overloaded"]
    assert load["completed_requests_per_s"] == pytest.approx(25 / 49.5)
    assert "0.51 req/s completed" in overload_warning(load) and "--rate" in overload_warning(load)


def test_unfinished_requests_count_as_not_completed() -> None:
    arrival = np.arange(10.0)
    load = load_check(_table(arrival, np.full(10, np.nan)))
    assert load["in_flight_growth"] == 5 and load["overloaded"]


def test_no_arrival_window_means_no_check() -> None:
    assert load_check(_table(np.zeros(5), np.ones(5))) is None
    assert load_check(_table(np.array([3.0]), np.array([4.0]))) is None


def test_simulate_warns_when_the_offered_load_is_not_served(tmp_path) -> None:
    runner = CliRunner()
    busy = runner.invoke(main, ["simulate", "--rate", "6", "--num-requests", "300", "--out", str(tmp_path / "a")])
    calm = runner.invoke(main, ["simulate", "--rate", "1.5", "--num-requests", "300", "--out", str(tmp_path / "b")])
    assert busy.exit_code == 0 and calm.exit_code == 0
    assert "warning: overloaded: 5.88 req/s offered" in busy.output
    assert "overloaded" not in calm.output
    closed = runner.invoke(main, ["simulate", "--arrival", "closed-loop", "--concurrency", "4", "--num-requests", "20",
                                  "--out", str(tmp_path / "c")])
    assert closed.exit_code == 0
    assert "load" not in json.loads((tmp_path / "c" / "summary.json").read_text())  # a closed loop adapts its load
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["load"]["overloaded"] is True
