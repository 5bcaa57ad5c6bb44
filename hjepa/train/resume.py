"""What makes a run resumable: the hash of everything that shapes its trajectory, and the state
(weights, optimiser, RNGs, log rows, wall time) that a checkpoint carries.

Why the hash is derived from the schema, not from a hand-kept list of keys: a key added to
``model``, ``mask``, ``train`` or ``ema`` changes the hash by default, so a checkpoint written
under other values is never resumed by mistake. The keys that do not change the trajectory are
listed once, in ``NOT_SHAPING``, and a test proves the list is exact.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hjepa.core.config import Params, to_dict

SHAPING_SECTIONS = ("seed", "model", "mask", "train", "ema")

NOT_SHAPING = frozenset(
    {
        "train.checkpoint_every",  # when state is saved, not what it is
        "train.keep_checkpoints",  # how many files are kept
        "train.num_workers",  # batches come from per-batch generators: same for any count
        "train.log_every",  # TensorBoard point spacing
        "train.device",  # a CPU checkpoint may continue on a GPU (and back)
        "train.compile",  # the same blocks' kernels, fused or not
    }
)


def shaping_values(params: Params) -> dict[str, Any]:
    """Every leaf of the shaping sections by dotted key, without the ``NOT_SHAPING`` ones."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    full = to_dict(params)
    for section in SHAPING_SECTIONS:
        walk(full[section], f"{section}.")
    return {k: v for k, v in flat.items() if k not in NOT_SHAPING}


def data_fingerprint(data_dir: Path) -> str:
    """Hash of the prepared data's manifest (file names, labels, image hashes, splits)."""
    manifest = data_dir / "manifest.csv"
    source = manifest if manifest.is_file() else data_dir / "train_images.npy"
    if not source.is_file():
        return "none"
    digest = hashlib.sha256()
    with open(source, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):  # streamed: any size of data set
            digest.update(chunk)
    return digest.hexdigest()[:16]


def training_hash(params: Params, data_fingerprint: str) -> str:
    """Stable hash of the shaping params and the data: equal hashes resume, others start fresh."""
    blob = json.dumps({**shaping_values(params), "data": data_fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and strings (``weights_only``-safe)."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
