"""The H-JEPA pretraining loop: AdamW with schedules, EMA target, checkpoints, exact resume, logs.

Design choices that matter to users:
- Every step's randomness comes from per-batch generators (hjepa.train.batches) plus torch's
  global RNG (stochastic depth), whose state is checkpointed (hjepa.train.resume): a run killed
  and resumed ends bitwise equal (on CPU) to an uninterrupted one.
- Schedules are functions of the global step (hjepa.train.optim.Schedules), so resume
  continues them instead of restarting them.
- Host-device syncs (``.item()``) happen only at logging intervals and epoch ends.
- Reporting (bar, TensorBoard, TSV) lives in hjepa.train.run_log; this file is the loop.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hjepa.core.config import Params
from hjepa.core.errors import UserError
from hjepa.core.io import write_json
from hjepa.core.prepared import load_split
from hjepa.core.transforms import to_model_input
from hjepa.models.encoder import save_encoder
from hjepa.models.hjepa import HJEPA, Masks
from hjepa.train.augment import Augmenter
from hjepa.train.batches import Batch, EpochSpan, PretrainBatches, make_loader
from hjepa.train.checkpoint import (
    find_resume_point,
    remove_stale_temp_files,
    restore_set_aside,
    save_checkpoint,
    set_aside,
)
from hjepa.train.collapse import CollapseCheck, check_collapse, warn
from hjepa.train.device_setup import (
    compile_blocks,
    main_process_threads,
    prefer_shape_free_attention,
)
from hjepa.train.diagnostics import encoder_diagnostics
from hjepa.train.distributed import DistInfo, barrier, init_distributed, shutdown
from hjepa.train.ema import ema_update
from hjepa.train.masks import MaskGenerator
from hjepa.train.optim import Schedules, StepSchedule, make_optimizer
from hjepa.train.resume import (
    capture_rng,
    data_fingerprint,
    restore_rng,
    seed_everything,
    training_hash,
)
from hjepa.train.run_log import RunLog, gamma_stats, write_tsv

COLLAPSE_STD = 1e-3  # target-feature std below this = representation collapse
DIAG_IMAGES = 256  # train images (fixed) behind the per-epoch rank / position-share diagnostics
MONITOR_IMAGES = 2048  # at most this many val images (fixed) behind the online k-NN monitor


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


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        self.params = params
        self.paths = paths
        self.log = log
        self.experiment = experiment
        t = params.train
        self.device = resolve_device(t.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.hash = training_hash(params, data_fingerprint(paths.data_dir))
        # Every train key is read here, once, whatever path the run then takes (a run resumed
        # from its final checkpoint never enters the loop): the read record stays the same.
        self.epochs = t.epochs
        self.num_workers = t.num_workers
        torch.set_num_threads(main_process_threads(self.device, self.num_workers))
        prefer_shape_free_attention(self.device)
        self.grad_clip = t.grad_clip
        self.checkpoint_every, self.keep_checkpoints = t.checkpoint_every, t.keep_checkpoints
        self.monitor_every = t.monitor_every

        seed_everything(params.seed)
        images = (
            train_images if train_images is not None else load_split(paths.data_dir, "train")[0]
        )
        pick = np.random.default_rng(params.seed).permutation(len(images))[:DIAG_IMAGES]
        self.diag_images = to_model_input(np.array(images[np.sort(pick)]))
        self.monitor: tuple[torch.Tensor, np.ndarray] | None = None
        if self.monitor_every > 0:
            # A fixed subset, so the monitor's memory and time do not grow with the data set.
            val_images, val_labels = load_split(paths.data_dir, "val")
            rows = np.random.default_rng(params.seed).permutation(len(val_images))
            rows = np.sort(rows[:MONITOR_IMAGES])
            self.monitor = (to_model_input(val_images[rows]), np.asarray(val_labels[rows]))
        self.batches = PretrainBatches(
            images,
            batch_size=t.batch_size,
            seed=params.seed,
            masks=MaskGenerator.from_params(params.mask, params.grid_size),
            augment=Augmenter.from_params(t.augment),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            two_views=params.model.invariance_weight > 0,
        )
        self.steps_per_epoch = len(self.batches)
        self.schedules = Schedules(t, params.ema, self.steps_per_epoch)
        if t.warmup_epochs_used < t.warmup_epochs and self.dist.is_main:
            used = t.warmup_epochs_used
            self.log(
                f"notice: train.warmup_epochs {t.warmup_epochs} > train.epochs - 1; using {used}"
            )
        self.total_steps = self.schedules.total_steps
        self.warmup_steps = self.schedules.warmup_steps

        self.model = HJEPA.from_params(params.model, params.data).to(self.device)
        if t.compile:
            n = compile_blocks(self.model)
            log(
                f"train.compile: {n} transformer blocks compiled (dynamic shapes); "
                "the first steps include compilation"
            )
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.optimizer = make_optimizer(self.model, t.lr)
        self.autocast = self.device.type == "cuda"
        self.run_log = RunLog(paths.runs, experiment, t.log_every, self.dist.is_main)
        self.start_epoch = 0
        self.wall_time = 0.0

    # ------------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        self._resume_if_possible()
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
        n_levels = len(self.params.model.hierarchy)
        sums = torch.zeros(n_levels + 4, device=self.device)
        wait = 0.0
        t0 = t_fetch = time.perf_counter()
        sched = self.schedules.at(epoch * self.steps_per_epoch)
        for i, batch in enumerate(batches):
            wait += time.perf_counter() - t_fetch
            step = epoch * self.steps_per_epoch + i
            sched = self.schedules.apply(self.optimizer, step)
            batch = batch.to(self.device)
            out, grad_norm = self.train_step(
                batch.images, batch.masks, sched.momentum, batch.second_view
            )
            zero = out.target_std.new_zeros(())
            extras = [out.reg_loss, out.inv_loss]
            sums += torch.stack(
                [out.loss.detach().float(), out.target_std.float()]
                + [(v if v is not None else zero).float() for v in extras]
                + [v.float() for v in out.level_losses]
            )
            ips = (i + 1) * self.batches.batch_size / max(time.perf_counter() - t0, 1e-9)
            label = f"{epoch + 1}/{self.epochs}"
            self.run_log.step(step + 1, label, out, sched, ips, grad_norm, self.model)
            t_fetch = time.perf_counter()
        epoch_time = time.perf_counter() - t0
        self.wall_time += epoch_time
        self._end_epoch(epoch, sums, sched, epoch_time, wait)

    def set_schedules(self, step: int) -> StepSchedule:
        """Put the optimiser on ``step``'s lr and weight decay (tests, benchmarks)."""
        return self.schedules.apply(self.optimizer, step)

    def train_step(
        self,
        images: torch.Tensor,
        masks: Masks,
        momentum: float,
        second_view: torch.Tensor | None = None,
    ) -> tuple[Any, torch.Tensor]:
        """Forward, backward, clip, AdamW step, then the EMA update with ``momentum``."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.train_model(images, masks, second_view)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        clip = self.grad_clip
        if clip > 0:
            trained = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = nn.utils.clip_grad_norm_(trained, clip)
        else:
            grad_norm = torch.zeros(())
        self.optimizer.step()
        ema_update(self.model.target_encoder, self.model.context_encoder, momentum)
        return out, grad_norm

    def _end_epoch(
        self, epoch: int, sums: torch.Tensor, sched: StepSchedule, epoch_time: float, wait: float
    ) -> None:
        means = (sums / self.steps_per_epoch).tolist()
        if self.dist.enabled:
            t = torch.tensor(means, device=self.device)
            torch.distributed.all_reduce(t)
            means = (t / self.dist.world_size).tolist()
        loss, target_std, reg, inv, levels = means[0], means[1], means[2], means[3], means[4:]
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * self.steps_per_epoch,
            "loss": loss,
            **{f"loss_level_{i}": v for i, v in enumerate(levels)},
            "lr": sched.lr,
            "weight_decay": sched.weight_decay,
            "ema_momentum": sched.momentum,
            "target_std": target_std,
            "reg_loss": reg,
            "inv_loss": inv,
            **self._diagnostics(epoch),
            "images_per_s": self.steps_per_epoch * self.batches.batch_size / epoch_time,
            "data_wait_frac": wait / epoch_time,
            **gamma_stats(self.model),
        }
        self.run_log.epoch(row)
        if not math.isfinite(loss):
            raise UserError(
                f"loss became {loss} in epoch {epoch + 1}; lower train.lr "
                f"({self.params.train.lr}) or raise train.warmup_epochs"
            )
        if target_std < COLLAPSE_STD and self.dist.is_main:
            warn(
                f"warning: target features collapsed in epoch {epoch + 1} (std {target_std:.2e} "
                f"< {COLLAPSE_STD}); the encoder outputs nearly the same vector for every input"
            )
        collapse = self._collapse()
        if collapse.detected and collapse.epoch == epoch + 1 and self.dist.is_main:
            warn(collapse.message())
        every, keep = self.checkpoint_every, self.keep_checkpoints
        if self.dist.is_main and ((epoch + 1) % every == 0 or epoch + 1 == self.epochs):
            save_checkpoint(self.paths.checkpoints, epoch + 1, self._state(epoch + 1), keep)
        barrier(self.dist)

    def _diagnostics(self, epoch: int) -> dict[str, Any]:
        """Representation health of the EMA target encoder (the one the probe reads); the
        online k-NN only every ``train.monitor_every`` epochs and at the last ("" otherwise)."""
        out = encoder_diagnostics(self.model.target_encoder, self.diag_images.to(self.device))
        if self.monitor is not None:
            every = self.monitor_every
            due = (epoch + 1) % every == 0 or epoch + 1 == self.epochs
            knn: Any = ""
            if due:
                images, labels = self.monitor
                val = encoder_diagnostics(self.model.target_encoder, images.to(self.device), labels)
                knn = val["knn_monitor"]
            out["knn_monitor"] = knn
        return out

    def _collapse(self) -> CollapseCheck:
        """Dimensional-collapse verdict on the effective ranks logged so far (collapse.py)."""
        ranks = [float(row["effective_rank"]) for row in self.run_log.rows]
        return check_collapse(ranks, self.params.model.width, self.epochs, len(self.diag_images))

    # ------------------------------------------------------------------ checkpoint state
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "params_hash": self.hash,
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng(),
            "log_rows": json.dumps(self.run_log.rows),
            "wall_time": self.wall_time,
            "experiment": self.experiment,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        self.run_log.rows = json.loads(state["log_rows"])
        self.start_epoch = int(state["epoch"])
        self.wall_time = float(state["wall_time"])

    def _resume_if_possible(self) -> None:
        ckpt_dir = self.paths.checkpoints
        if self.dist.is_main:
            for stale in remove_stale_temp_files(ckpt_dir):
                self.log(f"removed unfinished checkpoint write {stale}")
            if restore_set_aside(ckpt_dir):
                self.log(
                    f"put back the checkpoints an earlier failed run had set aside in {ckpt_dir}"
                )
        barrier(self.dist)
        quiet: Callable[[str], None] = lambda _m: None  # noqa: E731
        point, foreign = find_resume_point(
            ckpt_dir, self.hash, log=self.log if self.dist.is_main else quiet
        )
        if point is None:
            if foreign and self.dist.is_main:
                aside = set_aside(ckpt_dir, foreign)
                self.log(
                    f"{len(foreign)} checkpoint(s) in {ckpt_dir} were written under different "
                    f"params (or data); not resuming them: starting fresh. They are set aside in "
                    f"{aside} and deleted once this run has written its first checkpoint"
                )
            barrier(self.dist)
            return
        self._restore(point.state)
        if self.dist.is_main:
            self.log(f"resuming from {point.path} (epoch {self.start_epoch}/{self.epochs})")

    def _finish(self) -> dict[str, Any]:
        rows = self.run_log.rows
        last = rows[-1]
        n_params = sum(p.numel() for p in self.model.context_encoder.parameters())
        metrics: dict[str, Any] = {
            "loss": last["loss"],
            **{k: v for k, v in last.items() if k.startswith("loss_level_")},
            "epochs": self.epochs,
            "steps": self.total_steps,
            "wall_time_s": round(self.wall_time, 3),
            "images_per_s": round(
                self.total_steps * self.batches.batch_size / max(self.wall_time, 1e-9), 2
            ),
            "target_std": last["target_std"],
            "effective_rank": last["effective_rank"],
            "position_share": last["position_share"],
            "collapsed": bool(last["target_std"] < COLLAPSE_STD),
            "collapse": self._collapse().as_metrics(),
            "encoder_params": n_params,
            "layerscale": bool(self.params.model.layerscale.use_layerscale),
        }
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
