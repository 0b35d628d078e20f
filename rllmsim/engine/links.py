"""One copy between two GPU groups of a deployment: over the GPUs' interconnect inside one NVLink
domain, over the network between domains.

The rates and fixed costs are the assumptions the roofline's all-reduce and the data-parallel
exchange already make (`RooflineParams`: 70 % of NVLink/xGMI, 50 % of PCIe, 8 us a call;
`rllmsim.cost.data_parallel`: 50 GB/s per GPU and 20 us between nodes), so pipeline stage
crossings (`pipeline_replica.py`) and live migration (`migration.py`) price a copy alike.
"""

from __future__ import annotations

from rllmsim.cost.data_parallel import INTER_NODE_GBPS, INTER_NODE_LATENCY_S
from rllmsim.cost.roofline import RooflineParams
from rllmsim.deployment import Deployment

GIGA = 1e9


def link(dep: Deployment, crosses_nodes: bool) -> tuple[float, float]:
    """(bytes per second per GPU, fixed seconds) of one copy, within a node or between nodes."""
    params = RooflineParams()
    if crosses_nodes:
        return INTER_NODE_GBPS * GIGA * params.interconnect_efficiency, INTER_NODE_LATENCY_S
    pcie = dep.gpu.interconnect.startswith("pcie")
    efficiency = params.pcie_interconnect_efficiency if pcie else params.interconnect_efficiency
    return dep.gpu.interconnect_gbps * GIGA * efficiency, params.allreduce_latency_s
