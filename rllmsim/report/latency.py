"""Per-request latencies of a run's requests table, as the run page and the compare page draw them."""

from __future__ import annotations

import pandas as pd

from rllmsim.engine.request import per_request_tpot


def latencies(requests: pd.DataFrame) -> dict[str, pd.Series]:
    """TTFT, TPOT and E2EL (seconds) of the completed requests; TPOT from the table's tpot_s, or
    computed the same way for a run directory written before that column existed."""
    done = requests[requests["finish_s"].notna()]
    tpot = done["tpot_s"] if "tpot_s" in done else pd.Series(
        per_request_tpot(done["ttft_s"].to_numpy(), done["e2el_s"].to_numpy(), done["output_tokens"].to_numpy()),
        index=done.index)
    return {"TTFT": done["ttft_s"], "TPOT": tpot, "E2EL": done["e2el_s"]}
