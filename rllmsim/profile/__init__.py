"""Profiling a real vLLM engine: the only package that imports vllm (lazily, in vllm_runner and
driver). The simulator never imports it; the two meet at the profile file
(`rllmsim.cost.profile_table`) and the cost-model interface.

    plan.py         the grid of batch shapes and its checks (pure Python)
    vllm_runner.py  engine construction, per-step capture, run_profile()
    driver.py       walks the engine through the plan one step() at a time
    contention.py   flags steps slowed by other processes (run-queue wait)
    writer.py       incremental, atomic parquet + JSON output
    metadata.py     model resolution, model shape, device and host description
"""
