"""Compare serving variants on one workload and seed: a delta table, JSON/CSV, a plotly page.

    from rllmsim.compare import parse_variants, run_comparison, write_comparison

Calling the package, `rllmsim.compare(variants, ...)`, runs `rllmsim.api.compare.compare`.
"""

from rllmsim.api.callable_module import make_callable

from rllmsim.compare.run import Comparison, run_comparison, write_comparison
from rllmsim.compare.table import METRICS, Metric, delta_frame, format_table
from rllmsim.compare.variants import Variant, parse_variants, variant_from_flags, variant_from_spec

__all__ = [
    "Comparison", "METRICS", "Metric", "Variant", "delta_frame", "format_table", "parse_variants",
    "run_comparison", "variant_from_flags", "variant_from_spec", "write_comparison",
]

make_callable(__name__, "rllmsim.api.compare:compare")
