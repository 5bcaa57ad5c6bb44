"""The one layer that knows DVC: reading the pipeline through DVC's own API (``dvc_repo``),
``hjepa dag check``, ``hjepa doctor`` and ``hjepa compare``. The stage folders (``hjepa.data``,
``hjepa.train``, ``hjepa.eval``, ``hjepa.report``) never import from here; ``flows/`` (Prefect)
does.
"""
