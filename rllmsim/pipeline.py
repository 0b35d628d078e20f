"""Pipeline parallelism as vLLM runs it: `--pipeline-parallel-size P` beside `--tensor-parallel-size`.

A replica's layers are cut into P stages, each on its own TP group of `tp` GPUs (P x tp GPUs per
replica, times the DP size). vLLM splits the layers evenly and gives any remainder to the stages
before the last (`vllm/distributed/utils.py` `get_pp_indices`); the first stage also holds the
embedding and the last the lm_head. Between stages, each micro-batch sends its hidden states and
residual (`IntermediateTensors`) to the next stage's GPUs.

One engine core schedules for all stages, keeping up to P micro-batches in flight
(`max_concurrent_batches`, `EngineCore.step_with_batch_queue`); how they move through the stages
is `rllmsim.engine.pipeline_replica`'s business. Every stage holds the KV of its own layers for
every running sequence, so the pool's block count is set by the stage with the most layers.
vLLM 0.32's V1 model runner turns async scheduling off with pipeline parallelism
(`VllmConfig.__post_init__`: "does not support it with pipeline parallelism").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rllmsim.engine.kv_capacity import ACTIVATION_BYTES
from rllmsim.errors import ConfigError
from rllmsim.specs.models import UNQUANTIZED_BYTES

if TYPE_CHECKING:
    from rllmsim.deployment import Deployment

#: Tensors sent per token between stages: the hidden states and the residual.
TENSORS_PER_TOKEN = 2


def check(dep: Deployment) -> None:
    """One-line ConfigError for a pipeline layout vLLM refuses or this simulator does not model."""
    pp = dep.pipeline_parallel_size
    if isinstance(pp, bool) or not isinstance(pp, int) or pp < 1:
        raise ConfigError(f"pipeline_parallel_size must be an integer >= 1, got {pp!r}; "
                          "give --pipeline-parallel-size 1 or more")
    if pp == 1:
        return
    if pp > dep.model.num_layers:
        raise ConfigError(f"pipeline_parallel_size {pp} is more than the {dep.model.num_layers} layers of "
                          f"{dep.model.name}; give --pipeline-parallel-size <= {dep.model.num_layers}")
    unmodelled = [
        (dep.async_scheduling is True, "--async-scheduling (vLLM's V1 model runner turns it off with "
                                       "pipeline parallelism)", "drop --async-scheduling"),
        (dep.speculative_method is not None, "speculative decoding", "drop --speculative-method"),
        (dep.data_parallel_size > 1 and dep.model.num_experts > 0, "data parallelism of a mixture-of-experts "
                                                                     "model", "use --data-parallel-size 1"),
        (dep.model.attention.num_sliding_layers > 0, f"the sliding-window layers of {dep.model.name}",
         "use --pipeline-parallel-size 1"),
    ]
    for refused, what, fix in unmodelled:
        if refused:
            raise ConfigError(f"pipeline_parallel_size {pp} with {what} is not modelled; {fix}")


def stage_layers(num_layers: int, pp: int) -> list[int]:
    """Layers per stage as vLLM's `get_pp_indices` splits them: evenly, with the remainder added
    to the stages just before the last, one each."""
    partitions = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        partitions[-i] += 1
    return partitions


def max_stage_layers(dep: Deployment) -> int:
    """Layers of the largest stage: its KV per token sets how many blocks the pool has."""
    return max(stage_layers(dep.model.num_layers, dep.pipeline_parallel_size))


def weight_bytes_per_gpu(dep: Deployment, per_gpu: float) -> float:
    """Weights on a GPU of the fullest stage, given `per_gpu`, the bytes one GPU would hold
    without pipeline parallelism: each stage keeps its layers' share of the layer weights, the
    first the embedding and the last the lm_head (the embedding again if tied)."""
    pp = dep.pipeline_parallel_size
    if pp == 1:
        return per_gpu
    m = dep.model
    width = max(dep.weight_bytes_per_param, UNQUANTIZED_BYTES)  # quantization leaves them bf16
    embedding = m.embedding_params * width
    lm_head = 0.0 if m.tie_word_embeddings else m.lm_head_params * width
    layers = per_gpu - (embedding + lm_head) / dep.tp
    ends = {0: embedding, pp - 1: lm_head + (embedding if m.tie_word_embeddings else 0.0)}
    return max(layers * n / m.num_layers + ends.get(i, 0.0) / dep.tp
               for i, n in enumerate(stage_layers(m.num_layers, pp)))


def activation_bytes_per_token(dep: Deployment) -> float:
    """Bytes one token's intermediate tensors take between two stages."""
    return float(TENSORS_PER_TOKEN * ACTIVATION_BYTES * dep.model.hidden_size)
