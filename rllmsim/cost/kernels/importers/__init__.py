"""Readers that turn other projects' kernel measurements into rllmsim's kernel tables.

Each importer reads one source format and returns `KernelTables` in the canonical schema of
`rllmsim.cost.kernels.tables`, so the shipped tables and a user's own measurements go through the
same code: `scripts/build_kernel_tables.py` runs them over `../shared/kernels`, and
`rllmsim kernels import` runs them over whatever a user brings.
"""
