"""babelsearch's HTTP service (FastAPI). Torch-free: encoder (ONNX Runtime) + indexes + evaluation.metrics.

Run it with ``python -m app --host 0.0.0.0 --port 8000``; configure it with ``BABELSEARCH_*`` variables
(see ``app.config.Settings``).
"""
__version__ = "0.1.0"
