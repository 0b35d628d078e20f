"""The op-level step-time model: vLLM's measured kernels per GPU (see docs/cost_models.md)."""
