"""The H-JEPA pretraining loop: AdamW with schedules, EMA target, checkpoints, exact resume, logs.

Design choices that matter to users:
- Every step's randomness comes from per-batch generators (hjepa.train.batches) plus torch's
  global RNG (stochastic depth), whose state is checkpointed (hjepa.train.resume): a run killed
  and resumed ends bitwise equal (on CPU) to an uninterrupted one.
- Schedules are functions of the global step (hjepa.train.optim.Schedules), so resume
  continues them instead of restarting them.
- Host-device syncs (``.item()``) happen only at logging intervals and epoch ends.
- This file is the loop: which batch comes next, when an epoch ends, what is written at the end.
  One optimisation step is hjepa.train.step; checkpoints and resume, hjepa.train.resume; the
  per-epoch diagnostics and alarms, hjepa.train.diagnostics and hjepa.train.collapse; reporting
  (bar, TensorBoard, TSV, final metrics), hjepa.train.run_log.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hjepa.core.config import Params
from hjepa.core.io import write_json
from hjepa.core.prepared import load_split
from hjepa.models.encoder import save_encoder
from hjepa.train.batches import Batch, EpochSpan, PretrainBatches, make_loader
from hjepa.train.collapse import CollapseCheck, check_collapse, epoch_alarms
from hjepa.train.device_setup import (
    main_process_threads,
    prefer_shape_free_attention,
    run_device,
)
from hjepa.train.diagnostics import EpochDiagnostics
from hjepa.train.distributed import barrier, shutdown
from hjepa.train.optim import StepSchedule
from hjepa.train.resume import (
    RunCheckpoints,
    data_fingerprint,
    seed_everything,
    training_hash,
)
from hjepa.train.run_log import (
    EpochMeans,
    RunLog,
    StepSums,
    final_metrics,
    gamma_stats,
    write_tsv,
)
from hjepa.train.step import TrainStep


@dataclass(frozen=True)
class PretrainPaths:
    data_dir: Path = Path("data/prepared")
    checkpoints: Path = Path("models/checkpoints")
    encoder: Path = Path("models/encoder_ema.pt")
    metrics: Path = Path("metrics/pretrain.json")
    log_tsv: Path = Path("metrics/pretrain_log.tsv")
    runs: Path = Path("runs")

    @classmethod
    def under(cls, root: Path, data_dir: Path | None = None) -> PretrainPaths:
        """The default layout below ``root`` (tests, benchmarks) instead of the working dir."""
        d = cls()
        moved = {f.name: root / getattr(d, f.name) for f in fields(cls)}
        if data_dir is not None:
            moved["data_dir"] = data_dir
        return cls(**moved)


class Pretrainer:
    """One pretraining run (fresh or resumed) from validated params."""

    def __init__(
        self,
        params: Params,
        paths: PretrainPaths = PretrainPaths(),
        log: Callable[[str], None] = print,
        experiment: str = "workspace",
        train_images: np.ndarray | None = None,
    ) -> None:
        """``experiment`` names the TensorBoard run; ``train_images`` (uint8 N×H×W×C) replaces
        the prepared train split (benchmarks)."""
        self.params, self.paths = params, paths
        t = params.train
        self.device, self.dist = run_device(t.device)
        self.hash = training_hash(params, data_fingerprint(paths.data_dir))
        # Every train key is read here, once, whatever path the run then takes (a run resumed
        # from its final checkpoint never enters the loop): the read record stays the same.
        self.epochs, self.num_workers = t.epochs, t.num_workers
        torch.set_num_threads(main_process_threads(self.device, self.num_workers))
        prefer_shape_free_attention(self.device)
        self.checkpoints = RunCheckpoints(
            paths.checkpoints, self.hash, t, experiment, self.dist, log
        )

        seed_everything(params.seed)
        images = (
            train_images if train_images is not None else load_split(paths.data_dir, "train")[0]
        )
        self.diagnostics = EpochDiagnostics(
            images, params.seed, t.epochs, t.monitor_every, paths.data_dir
        )
        self.batches = PretrainBatches.from_params(
            params, images, self.dist.rank, self.dist.world_size
        )
        self.steps_per_epoch = len(self.batches)
        self.train_step = TrainStep(params, self.device, self.dist, self.steps_per_epoch, log)
        self.model, self.optimizer = self.train_step.model, self.train_step.optimizer
        self.schedules = self.train_step.schedules
        self.total_steps = self.schedules.total_steps
        self.run_log = RunLog(paths.runs, experiment, t.log_every, self.dist.is_main)
        self.start_epoch, self.wall_time = 0, 0.0

    # ------------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        resumed = self.checkpoints.resume(self.model, self.optimizer, self.epochs)
        if resumed is not None:
            self.start_epoch, self.wall_time = resumed.epoch, resumed.wall_time
            self.run_log.rows = resumed.rows
        self.run_log.open(self.start_epoch * self.steps_per_epoch, self.total_steps)
        # One loader for all the epochs left: its workers start once (EpochSpan).
        span = EpochSpan(self.batches, self.start_epoch, self.epochs)
        cuda = self.device.type == "cuda"
        batches = iter(make_loader(span, self.num_workers, cuda)) if len(span) else iter(())
        try:
            for epoch in range(self.start_epoch, self.epochs):
                self._train_epoch(epoch, itertools.islice(batches, self.steps_per_epoch))
        finally:
            del batches  # the loader's workers end with their iterator
            self.run_log.close()
        metrics = self._finish()
        shutdown(self.dist)
        return metrics

    def _train_epoch(self, epoch: int, batches: Iterator[Batch]) -> None:
        self.model.train()
        sums = StepSums(len(self.params.model.hierarchy), self.device)
        wait = 0.0
        t0 = t_fetch = time.perf_counter()
        sched = self.schedules.at(epoch * self.steps_per_epoch)
        for i, batch in enumerate(batches):
            wait += time.perf_counter() - t_fetch
            step = epoch * self.steps_per_epoch + i
            sched = self.train_step.set_schedules(step)
            batch = batch.to(self.device)
            out, grad_norm = self.train_step(
                batch.images, batch.masks, sched.momentum, batch.second_view
            )
            sums.add(out)
            ips = (i + 1) * self.batches.batch_size / max(time.perf_counter() - t0, 1e-9)
            label = f"{epoch + 1}/{self.epochs}"
            self.run_log.step(step + 1, label, out, sched, ips, grad_norm, self.model)
            t_fetch = time.perf_counter()
        epoch_time = time.perf_counter() - t0
        self.wall_time += epoch_time
        self._end_epoch(epoch, sums.means(self.dist), sched, epoch_time, wait)

    def _end_epoch(
        self, epoch: int, means: EpochMeans, sched: StepSchedule, epoch_time: float, wait: float
    ) -> None:
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * self.steps_per_epoch,
            **means.entries(sched),
            **self.diagnostics(self.model.target_encoder, epoch, self.device),
            "images_per_s": self.steps_per_epoch * self.batches.batch_size / epoch_time,
            "data_wait_frac": wait / epoch_time,
            **gamma_stats(self.model),
        }
        self.run_log.epoch(row)
        epoch_alarms(
            epoch + 1,
            means.loss,
            means.target_std,
            self.params.train.lr,
            self._collapse(),
            self.dist.is_main,
        )
        self.checkpoints.save_if_due(
            epoch + 1,
            self.epochs,
            self.steps_per_epoch,
            self.model,
            self.optimizer,
            self.run_log.rows,
            self.wall_time,
        )
        barrier(self.dist)

    def _collapse(self) -> CollapseCheck:
        """Dimensional-collapse verdict on the effective ranks logged so far (collapse.py)."""
        ranks = [float(row["effective_rank"]) for row in self.run_log.rows]
        samples = len(self.diagnostics.images)
        return check_collapse(ranks, self.params.model.width, self.epochs, samples)

    def _finish(self) -> dict[str, Any]:
        rows = self.run_log.rows
        metrics = final_metrics(
            rows[-1],
            epochs=self.epochs,
            steps=self.total_steps,
            wall_time=self.wall_time,
            batch_size=self.batches.batch_size,
            collapse=self._collapse().as_metrics(),
            encoder_params=sum(p.numel() for p in self.model.context_encoder.parameters()),
            layerscale=bool(self.params.model.layerscale.use_layerscale),
        )
        if self.dist.is_main:
            # Every output is (re)written here, from state restored with the checkpoint too: a
            # rerun that resumes from the final checkpoint (DVC deleted the outputs, or they
            # were lost) must still leave the complete set behind.
            write_tsv(self.paths.log_tsv, rows)
            save_encoder(
                self.paths.encoder,
                self.model.target_encoder,
                extra={"params_hash": self.hash, "epochs": self.epochs},
            )
            write_json(self.paths.metrics, metrics)
        return metrics


def pretrain(
    params: Params, paths: PretrainPaths = PretrainPaths(), experiment: str = "workspace"
) -> dict[str, Any]:
    """Run (or resume) pretraining and write the encoder, metrics, logs and checkpoints."""
    return Pretrainer(params, paths, log=lambda msg: tqdm.write(msg), experiment=experiment).run()
