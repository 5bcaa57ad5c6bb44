"""Data for the pipeline: raw sources, deterministic splits, the validated manifest, and the
reader API (``hjepa.core.prepared``) that pretraining and the probe use.

Nothing is imported here on purpose: ``hjepa.core.transforms`` (model input scaling) must stay
importable without pulling in PIL, pandas or pandera.
"""
