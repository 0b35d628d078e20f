"""Many simulations: sweeps over a YAML grid and capacity plans.

spec.py (the YAML grid and run keys), runner.py (one run -> one result row), executors.py (inline,
process pool, Ray), results.py (the atomic, resumable results table), driver.py (a sweep end to
end), slo.py (SLOs such as ttft_p99=10s), probe.py (one judged rate on a deployment, with early
stop), plan.py (bisection for the sustainable rate, sizing, the cheapest deployment, Pareto),
plan_output.py (the plan as text and files), pricing.py ($/hour and $ per million tokens).
"""
