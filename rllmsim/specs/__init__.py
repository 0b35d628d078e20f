"""What hardware and models are: GPU and model specs, read from catalogs shipped as data.

`load_gpu("h100")` and `load_model("deepseek-r1-distill-qwen-7b")` (or a Hugging Face id, or a
path to a config.json) are the entry points; everything downstream (deployment sizing, the
roofline cost model, reports) works from the frozen `GPUSpec` / `ModelSpec` they return.
"""

from rllmsim.specs.dtypes import dtype_bytes
from rllmsim.specs.gpus import GPUSpec, gpu_names, load_gpu, uncatalogued_gpu
from rllmsim.specs.model_catalog import load_model, model_from_config, model_names
from rllmsim.specs.models import ModelSpec

__all__ = [
    "GPUSpec",
    "ModelSpec",
    "dtype_bytes",
    "gpu_names",
    "load_gpu",
    "load_model",
    "model_from_config",
    "model_names",
    "uncatalogued_gpu",
]
