"""The H-JEPA pretraining loop: AdamW with schedules, EMA target, checkpoints, exact resume, logs.

Design choices that matter to users:
- Every step's randomness comes from per-batch generators (hjepa.train.batches) plus torch's
  global RNG (stochastic depth), whose state is checkpointed: a run killed and resumed ends
  bitwise equal (on CPU) to an uninterrupted one.
- Schedules are functions of the global step (hjepa.train.schedules,
  hjepa.train.ema.momentum_at), so resume continues them instead of restarting them.
- Host-device syncs (``.item()``) happen only at logging intervals and epoch ends.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hjepa.core.config import Params
from hjepa.core.io import write_json, write_text
from hjepa.core.prepared import load_split
from hjepa.core.progress import progress_bar
from hjepa.core.transforms import to_model_input
from hjepa.models.encoder import save_encoder
from hjepa.models.hjepa import HJEPA
from hjepa.train.augment import Augmenter
from hjepa.train.batches import PretrainBatches, make_loader
from hjepa.train.checkpoint import (
    find_resume_point,
    params_hash,
    remove_stale_temp_files,
    save_checkpoint,
)
from hjepa.train.diagnostics import encoder_diagnostics
from hjepa.train.distributed import DistInfo, barrier, init_distributed, shutdown
from hjepa.train.ema import ema_update, momentum_at
from hjepa.train.masks import MaskGenerator
from hjepa.train.schedules import cosine_at, lr_at

COLLAPSE_STD = 1e-3  # target-feature std below this = representation collapse
DIAG_IMAGES = 256  # train images (fixed) behind the per-epoch rank / position-share diagnostics


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
        from hjepa.core.errors import UserError

        raise UserError("train.device is 'cuda' but no CUDA device is available; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def shaping_params(params: Params) -> dict[str, Any]:
    """The params that determine the training trajectory (reading them records them for DVC)."""
    t = params.train
    return {
        "seed": params.seed,
        "model": json.loads(params.model.model_dump_json()),
        "mask": json.loads(params.mask.model_dump_json()),
        "ema": [params.ema.momentum_start, params.ema.momentum_end],
        "train": [
            t.epochs,
            t.batch_size,
            t.lr,
            t.min_lr,
            t.warmup_epochs,
            t.weight_decay_start,
            t.weight_decay_end,
            t.grad_clip,
            list(t.augment.crop_scale),
            t.augment.hflip,
            t.monitor_every,
        ],
    }


def _no_decay(name: str, p: nn.Parameter) -> bool:
    """Biases, norms, LayerScale gammas, position embeddings and mask tokens get no weight decay."""
    return p.ndim <= 1 or "pos_embed" in name or "mask_token" in name or name.endswith(".gamma")


def param_groups(model: HJEPA) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    modules = [model.context_encoder, model.predictor]
    if model.invariance_head is not None:
        modules.append(model.invariance_head)
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if _no_decay(name, p) else decay).append(p)
    return [
        {"params": decay, "weight_decay": 0.0, "decays": True},
        {"params": no_decay, "weight_decay": 0.0, "decays": False},
    ]


def gamma_stats(model: HJEPA) -> dict[str, float]:
    """Mean |gamma| (ls1 and ls2 together) per block, context (ctx) and target (tgt) encoders."""
    out: dict[str, float] = {}
    for tag, enc in (("ctx", model.context_encoder), ("tgt", model.target_encoder)):
        per_block: dict[int, list[torch.Tensor]] = {}
        for name, p in enc.named_parameters():
            if name.endswith((".ls1.gamma", ".ls2.gamma")):
                block = int(name.split("blocks.")[1].split(".")[0])
                per_block.setdefault(block, []).append(p.detach().abs().mean())
        for block, values in sorted(per_block.items()):
            out[f"gamma_{tag}_block{block}"] = float(torch.stack(values).mean())
    return out


def _rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _write_tsv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[-1].keys())
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(_fmt(row.get(c, "")) for c in columns))
    write_text(path, "\n".join(lines) + "\n")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _data_fingerprint(data_dir: Path) -> str:
    manifest = data_dir / "manifest.csv"
    source = manifest if manifest.is_file() else data_dir / "train_images.npy"
    import hashlib

    return hashlib.sha256(source.read_bytes()).hexdigest()[:16] if source.is_file() else "none"


class Pretrainer:
    """One pretraining run (fresh or resumed) from validated params."""

    def __init__(
        self,
        params: Params,
        paths: PretrainPaths = PretrainPaths(),
        log: Callable[[str], None] = print,
        experiment: str | None = None,
        train_images: np.ndarray | None = None,
    ) -> None:
        """``train_images`` (uint8 N×H×W×C) replaces the prepared train split (benchmarks)."""
        self.params = params
        self.paths = paths
        self.log = log
        t = params.train
        self.device = resolve_device(t.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.experiment = experiment or os.environ.get("DVC_EXP_NAME") or "workspace"
        self.shaping = shaping_params(params)
        self.hash = params_hash({**self.shaping, "data": _data_fingerprint(paths.data_dir)})
        self.epochs = t.epochs
        self.checkpoint_every = t.checkpoint_every
        self.keep_checkpoints = t.keep_checkpoints
        self.log_every = t.log_every
        self.grad_clip = t.grad_clip
        self.num_workers = t.num_workers
        self.monitor_every = t.monitor_every

        _seed_everything(params.seed)
        images = (
            train_images if train_images is not None else load_split(paths.data_dir, "train")[0]
        )
        pick = np.random.default_rng(params.seed).permutation(len(images))[:DIAG_IMAGES]
        self.diag_images = to_model_input(np.array(images[np.sort(pick)]))
        self.monitor: tuple[torch.Tensor, np.ndarray] | None = None
        if self.monitor_every > 0:
            val_images, val_labels = load_split(paths.data_dir, "val")
            self.monitor = (to_model_input(np.array(val_images)), np.asarray(val_labels))
        self.batches = PretrainBatches(
            images,
            batch_size=t.batch_size,
            seed=params.seed,
            masks=MaskGenerator(params.mask, params.grid_size),
            augment=Augmenter(t.augment),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            two_views=params.model.invariance_weight > 0,
        )
        self.steps_per_epoch = len(self.batches)
        self.total_steps = self.steps_per_epoch * self.epochs
        self.warmup_steps = self.steps_per_epoch * t.warmup_epochs_used
        if t.warmup_epochs_used < t.warmup_epochs and self.dist.is_main:
            used = t.warmup_epochs_used
            self.log(
                f"notice: train.warmup_epochs {t.warmup_epochs} > train.epochs - 1; using {used}"
            )
        self.lr, self.min_lr = t.lr, t.min_lr
        self.wd = (t.weight_decay_start, t.weight_decay_end)
        self.momentum = (params.ema.momentum_start, params.ema.momentum_end)

        self.model = HJEPA(params).to(self.device)
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model),
            lr=self.lr,
            betas=(0.9, 0.95),
            foreach=True,
        )
        self.autocast = self.device.type == "cuda"
        self.rows: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.wall_time = 0.0

    # ------------------------------------------------------------------ checkpoint state
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "params_hash": self.hash,
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(),
            "log_rows": json.dumps(self.rows),
            "wall_time": self.wall_time,
            "experiment": self.experiment,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        self.rows = json.loads(state["log_rows"])
        self.start_epoch = int(state["epoch"])
        self.wall_time = float(state["wall_time"])

    def _prepare_resume(self) -> None:
        ckpt_dir = self.paths.checkpoints
        if self.dist.is_main:
            for stale in remove_stale_temp_files(ckpt_dir):
                self.log(f"removed unfinished checkpoint write {stale}")
        barrier(self.dist)
        point, foreign = find_resume_point(
            ckpt_dir, self.hash, log=self.log if self.dist.is_main else (lambda _m: None)
        )
        if point is None:
            if foreign and self.dist.is_main:
                self.log(
                    f"{len(foreign)} checkpoint(s) in {ckpt_dir} were written under different "
                    "params (or data); not resuming them: starting fresh and removing them"
                )
                for p in foreign:
                    p.unlink(missing_ok=True)
                    Path(f"{p}.sha256").unlink(missing_ok=True)
            barrier(self.dist)
            return
        self._restore(point.state)
        if self.dist.is_main:
            self.log(f"resuming from {point.path} (epoch {self.start_epoch}/{self.epochs})")

    # ------------------------------------------------------------------------ the loop
    def set_schedules(self, step: int) -> tuple[float, float]:
        lr = lr_at(step, self.total_steps, self.warmup_steps, self.lr, self.min_lr)
        wd = cosine_at(step, self.total_steps, *self.wd)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group["decays"] else 0.0
        return lr, wd

    def train_step(
        self, images: torch.Tensor, masks: Any, step: int, second_view: torch.Tensor | None = None
    ) -> tuple[Any, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.train_model(images, masks, second_view)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.grad_clip > 0:
            grad_norm = nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.grad_clip
            )
        else:
            grad_norm = torch.zeros(())
        self.optimizer.step()
        m = momentum_at(step, self.total_steps, *self.momentum)
        ema_update(self.model.target_encoder, self.model.context_encoder, m)
        return out, grad_norm

    def run(self) -> dict[str, Any]:
        self._prepare_resume()
        writer = self._writer() if self.dist.is_main else None
        n_levels = len(self.params.model.hierarchy)
        # A bar on a terminal; in a log (DVC, Prefect, CI) a plain line every 20 s.
        bar = progress_bar(
            self.total_steps, self.start_epoch * self.steps_per_epoch, "pretrain", self.dist.is_main
        )
        images_per_step = self.batches.batch_size
        try:
            for epoch in range(self.start_epoch, self.epochs):
                self.model.train()
                self.batches.set_epoch(epoch)
                loader = make_loader(self.batches, self.num_workers)
                sums = torch.zeros(n_levels + 4, device=self.device)
                wait = 0.0
                t0 = time.perf_counter()
                t_fetch = time.perf_counter()
                lr = wd = m = 0.0
                for i, batch in enumerate(loader):
                    wait += time.perf_counter() - t_fetch
                    step = epoch * self.steps_per_epoch + i
                    lr, wd = self.set_schedules(step)
                    batch = batch.to(self.device)
                    out, grad_norm = self.train_step(
                        batch.images, batch.masks, step, batch.second_view
                    )
                    m = momentum_at(step, self.total_steps, *self.momentum)
                    zero = out.target_std.new_zeros(())
                    reg = out.reg_loss if out.reg_loss is not None else zero
                    inv = out.inv_loss if out.inv_loss is not None else zero
                    sums += torch.stack(
                        [out.loss.detach().float(), out.target_std.float(), reg.float()]
                        + [inv.float()]
                        + [v.float() for v in out.level_losses]
                    )
                    if writer is not None and (step + 1) % self.log_every == 0:
                        elapsed = time.perf_counter() - t0
                        ips = (i + 1) * images_per_step / max(elapsed, 1e-9)
                        self._log_step(writer, step + 1, out, lr, wd, m, ips, grad_norm)
                        bar.set_postfix(
                            epoch=f"{epoch + 1}/{self.epochs}",
                            loss=f"{float(out.loss.detach()):.4f}",
                            img_s=f"{ips:.0f}",
                        )
                    bar.update(1)
                    t_fetch = time.perf_counter()
                epoch_time = time.perf_counter() - t0
                self.wall_time += epoch_time
                self._end_epoch(epoch, sums, lr, wd, m, epoch_time, wait, writer)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        metrics = self._finish()
        shutdown(self.dist)
        return metrics

    def _end_epoch(
        self,
        epoch: int,
        sums: torch.Tensor,
        lr: float,
        wd: float,
        m: float,
        epoch_time: float,
        wait: float,
        writer: Any,
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
        }
        row.update({f"loss_level_{i}": v for i, v in enumerate(levels)})
        row.update(
            {
                "lr": lr,
                "weight_decay": wd,
                "ema_momentum": m,
                "target_std": target_std,
                "reg_loss": reg,
                "inv_loss": inv,
                **self._diagnostics(epoch),
                "images_per_s": self.steps_per_epoch * self.batches.batch_size / epoch_time,
                "data_wait_frac": wait / epoch_time,
            }
        )
        row.update(gamma_stats(self.model))
        self.rows.append(row)
        if not math.isfinite(loss):
            from hjepa.core.errors import UserError

            raise UserError(
                f"loss became {loss} in epoch {epoch + 1}; lower train.lr ({self.lr}) or raise "
                "train.warmup_epochs"
            )
        if target_std < COLLAPSE_STD and self.dist.is_main:
            self.log(
                f"WARNING: target features collapsed in epoch {epoch + 1} (std {target_std:.2e} "
                f"< {COLLAPSE_STD}); the encoder outputs nearly the same vector for every input"
            )
        if writer is not None:
            writer.add_scalar("epoch/loss", loss, row["step"])
            for key in ("reg_loss", "inv_loss", "effective_rank", "position_share", "knn_monitor"):
                if isinstance(row.get(key), float):
                    writer.add_scalar(f"repr/{key}", row[key], row["step"])
            writer.add_scalar("epoch/data_wait_frac", row["data_wait_frac"], row["step"])
        if self.dist.is_main:
            _write_tsv(self.paths.log_tsv, self.rows)
            last = epoch + 1 == self.epochs
            if (epoch + 1) % self.checkpoint_every == 0 or last:
                save_checkpoint(
                    self.paths.checkpoints, epoch + 1, self._state(epoch + 1), self.keep_checkpoints
                )
        barrier(self.dist)

    def _diagnostics(self, epoch: int) -> dict[str, Any]:
        """Representation health of the EMA target encoder (the one the probe reads); the
        online k-NN only every ``train.monitor_every`` epochs and at the last ("" otherwise)."""
        images = self.diag_images.to(self.device)
        out = encoder_diagnostics(self.model.target_encoder, images)
        if self.monitor is not None:
            due = (epoch + 1) % self.monitor_every == 0 or epoch + 1 == self.epochs
            knn: Any = ""
            if due:
                val = encoder_diagnostics(
                    self.model.target_encoder, self.monitor[0].to(self.device), self.monitor[1]
                )
                knn = val["knn_monitor"]
            out["knn_monitor"] = knn
        return out

    # -------------------------------------------------------------------------- logging
    def _writer(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        run_dir = self.paths.runs / self.experiment
        start_step = self.start_epoch * self.steps_per_epoch
        if start_step == 0 and run_dir.exists():
            shutil.rmtree(run_dir)  # a fresh run: no stale curves from an older one
        return SummaryWriter(str(run_dir), purge_step=start_step or None)

    def _log_step(
        self,
        writer: Any,
        step: int,
        out: Any,
        lr: float,
        wd: float,
        m: float,
        ips: float,
        grad_norm: torch.Tensor,
    ) -> None:
        writer.add_scalar("loss/total", float(out.loss.detach()), step)
        for i, v in enumerate(out.level_losses):
            writer.add_scalar(f"loss/level_{i}", float(v), step)
        writer.add_scalar("schedule/lr", lr, step)
        writer.add_scalar("schedule/weight_decay", wd, step)
        writer.add_scalar("schedule/ema_momentum", m, step)
        writer.add_scalar("repr/target_std", float(out.target_std), step)
        writer.add_scalar("perf/images_per_s", ips, step)
        writer.add_scalar("train/grad_norm", float(grad_norm), step)
        for key, value in gamma_stats(self.model).items():
            tag, block = key.removeprefix("gamma_").split("_block")
            writer.add_scalar(f"layerscale_{tag}/block{block}_mean_abs_gamma", value, step)

    def _finish(self) -> dict[str, Any]:
        last = self.rows[-1]
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
            "encoder_params": n_params,
            "layerscale": bool(self.params.model.layerscale.use_layerscale),
        }
        if self.dist.is_main:
            # Every output is (re)written here, from state restored with the checkpoint too: a
            # rerun that resumes from the final checkpoint (DVC deleted the outputs, or they
            # were lost) must still leave the complete set behind.
            _write_tsv(self.paths.log_tsv, self.rows)
            save_encoder(
                self.paths.encoder,
                self.model.target_encoder,
                extra={"params_hash": self.hash, "epochs": self.epochs},
            )
            write_json(self.paths.metrics, metrics)
        return metrics


def pretrain(params: Params, paths: PretrainPaths = PretrainPaths()) -> dict[str, Any]:
    """Run (or resume) pretraining and write the encoder, metrics, logs and checkpoints."""
    return Pretrainer(params, paths, log=lambda msg: tqdm.write(msg)).run()
