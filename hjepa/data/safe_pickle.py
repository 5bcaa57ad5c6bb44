"""Unpickling numpy arrays from files we did not write, without letting them run code.

Why: data sets are still shipped as pickles (CIFAR-10's python batches, some wheels' arrays), and
``pickle.load`` on such a file executes whatever globals it names. This unpickler resolves only
the few numpy (and codec) names that plain arrays, dtypes and scalars need, and refuses the rest.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["ALLOWED_GLOBALS", "SafeUnpickler"]

ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside ``ALLOWED_GLOBALS`` (no code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load '{module}.{name}'")
        return super().find_class(module, name)
