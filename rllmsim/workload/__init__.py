"""Who sends what, when: arrival processes, request lengths and trace readers.

Every workload ends as one Request table (see `table.py`): synthetic ones as arrivals x lengths,
real ones through `read_trace`. Arrivals draw from the "arrivals" stream and lengths from the
"lengths" stream of `rllmsim.rng.RngStreams`, so changing one never moves the other.
"""

from rllmsim.workload.arrivals import ARRIVAL_PROCESSES, arrival_times, constant, gamma, poisson
from rllmsim.workload.lengths import (
    DatasetLengths,
    EmpiricalLengths,
    LengthDist,
    dataset_names,
    get_dataset,
    sample_lengths,
    sample_mixture,
)
from rllmsim.workload.table import REQUEST_COLUMNS, make_request_table, validate_request_table
from rllmsim.workload.traces import TRACE_FORMATS, detect_format, read_length_pairs, read_trace

__all__ = [
    "ARRIVAL_PROCESSES",
    "REQUEST_COLUMNS",
    "TRACE_FORMATS",
    "DatasetLengths",
    "EmpiricalLengths",
    "LengthDist",
    "arrival_times",
    "constant",
    "dataset_names",
    "detect_format",
    "gamma",
    "get_dataset",
    "make_request_table",
    "poisson",
    "read_length_pairs",
    "read_trace",
    "sample_lengths",
    "sample_mixture",
    "validate_request_table",
]
