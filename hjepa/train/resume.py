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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hjepa.core.config import Params, TrainParams, to_dict
from hjepa.train.checkpoint import (
    ResumePoint,
    find_resume_point,
    remove_stale_temp_files,
    restore_set_aside,
    save_checkpoint,
    set_aside,
)
from hjepa.train.distributed import DistInfo, barrier

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


def open_resume_point(
    directory: Path, run_hash: str, dist: DistInfo, log: Callable[[str], None]
) -> ResumePoint | None:
    """The newest good checkpoint of this run (``run_hash``) in ``directory``, or None to start
    fresh. First the folder is tidied: unfinished writes removed, checkpoints an earlier failed
    run set aside put back; checkpoints of other params are then set aside, not deleted (kept
    until this run writes its first). Every rank gets the same answer; only the main one
    touches files and logs."""
    if dist.is_main:
        for stale in remove_stale_temp_files(directory):
            log(f"removed unfinished checkpoint write {stale}")
        if restore_set_aside(directory):
            log(f"put back the checkpoints an earlier failed run had set aside in {directory}")
    barrier(dist)
    quiet: Callable[[str], None] = lambda _m: None  # noqa: E731
    point, foreign = find_resume_point(directory, run_hash, log=log if dist.is_main else quiet)
    if point is None:
        if foreign and dist.is_main:
            aside = set_aside(directory, foreign)
            log(
                f"{len(foreign)} checkpoint(s) in {directory} were written under different "
                f"params (or data); not resuming them: starting fresh. They are set aside in "
                f"{aside} and deleted once this run has written its first checkpoint"
            )
        barrier(dist)
    return point


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run stands: epochs done, their log rows, training seconds so far."""

    epoch: int
    rows: list[dict[str, Any]]
    wall_time: float


class RunCheckpoints:
    """One run's checkpoints: where it resumes from, what each holds (weights, optimiser, RNGs,
    log rows, wall time) and when one is written: every ``train.checkpoint_every`` epochs and at
    the last, the newest ``train.keep_checkpoints`` kept, by the main process only."""

    def __init__(
        self,
        directory: Path,
        run_hash: str,
        train: TrainParams,
        experiment: str,
        dist: DistInfo,
        log: Callable[[str], None],
    ) -> None:
        self.directory, self.run_hash, self.experiment = directory, run_hash, experiment
        self.every, self.keep = train.checkpoint_every, train.keep_checkpoints
        self.dist, self.log = dist, log

    def resume(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, epochs: int
    ) -> Resumed | None:
        """Load the newest good checkpoint of this run into ``model``, ``optimizer`` and the
        RNGs (``open_resume_point``); None to start fresh."""
        point = open_resume_point(self.directory, self.run_hash, self.dist, self.log)
        if point is None:
            return None
        state = point.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        rows = json.loads(state["log_rows"])
        resumed = Resumed(int(state["epoch"]), rows, float(state["wall_time"]))
        if self.dist.is_main:
            self.log(f"resuming from {point.path} (epoch {resumed.epoch}/{epochs})")
        return resumed

    def save_if_due(
        self,
        epoch: int,
        epochs: int,
        steps_per_epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        rows: list[dict[str, Any]],
        wall_time: float,
    ) -> None:
        """After 1-based ``epoch`` of ``epochs``: write the checkpoint if one is due."""
        if not self.dist.is_main or (epoch % self.every and epoch != epochs):
            return
        state = {
            "params_hash": self.run_hash,
            "epoch": epoch,
            "step": epoch * steps_per_epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": capture_rng(),
            "log_rows": json.dumps(rows),
            "wall_time": wall_time,
            "experiment": self.experiment,
        }
        save_checkpoint(self.directory, epoch, state, self.keep)
