"""rllmsim: a calibrated discrete-event simulator for serving reasoning LLMs on vLLM."""

__version__ = "0.1.0"
