"""hjepa: hierarchical I-JEPA pretraining, linear probing and reporting.

The library knows nothing of DVC or Prefect: ``pipeline/`` (DVC stage entry points) and
``flows/`` (Prefect) are thin layers over it.
"""

__version__ = "0.1.0"
