"""The request ledger of disaggregated serving: the client's view plus each request's hand-over.

The client-facing fields (first token, finish, tokens emitted) are those of the decode instance,
which streams the response (see `rllmsim.engine.disaggregated`); the prefill instance's progress
lives in its own `RequestLedger`. These arrays record the hand-over between the two, so the
per-pool waits can be told apart: prefill done, KV blocks allocated on the decode instance and
the transfer started, the KV landed, the request joined the decode batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rllmsim.engine.request import NOT_YET, RequestLedger


class DisaggregatedLedger(RequestLedger):
    """A `RequestLedger` whose `replica` is the decode instance, with the hand-over times."""

    def __init__(self, table: pd.DataFrame) -> None:
        super().__init__(table)
        n = self.size
        self.prefill_replica = np.full(n, -1, dtype=np.int64)
        self.prefill_done = np.full(n, NOT_YET)
        self.kv_transfer_start = np.full(n, NOT_YET)
        self.kv_ready = np.full(n, NOT_YET)
        self.decode_start = np.full(n, NOT_YET)
        self.kv_bytes = np.zeros(n)

    def to_frame(self) -> pd.DataFrame:
        """`requests.parquet`'s columns, then the hand-over: `kv_wait_s` is prefill done to
        transfer start (a decode step boundary with KV room), `decode_wait_s` KV landed to the
        decode batch taking the request."""
        frame = super().to_frame()
        frame["prefill_replica"] = self.prefill_replica
        frame["prefill_done_s"] = self.prefill_done
        frame["kv_transfer_start_s"] = self.kv_transfer_start
        frame["kv_ready_s"] = self.kv_ready
        frame["decode_start_s"] = self.decode_start
        frame["prefill_s"] = self.prefill_done - self.first_scheduled
        frame["kv_wait_s"] = self.kv_transfer_start - self.prefill_done
        frame["kv_transfer_s"] = self.kv_ready - self.kv_transfer_start
        frame["decode_wait_s"] = self.decode_start - self.kv_ready
        frame["kv_transfer_bytes"] = self.kv_bytes
        return frame
