"""Prefect flows over the DVC pipeline: Prefect orchestrates, DVC decides what reruns.

Importing this package sets the offline environment first, because Prefect reads its settings when
it is imported.
"""

from flows.env import apply_offline_env

apply_offline_env()
