"""The Python API: `rllmsim.simulate`, `compare`, `plan` and `validate` for scripts and notebooks.

Each function takes the keyword names the CLI's flags have (vLLM's names: `tp`/
`tensor_parallel_size`, `max_num_seqs`, `rate`, `num_requests`, ...) and returns an object holding
the results as dicts and DataFrames, with a rich display in Jupyter. The CLI commands are thin
layers over these functions, so both paths resolve deployments, workloads and cost models alike.

The modules are imported on first use (see `rllmsim.__getattr__`), not here.
"""
