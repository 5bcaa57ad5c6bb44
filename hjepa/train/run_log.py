"""Everything pretraining reports while it runs: the progress bar, TensorBoard, the per-epoch
rows of ``metrics/pretrain_log.tsv``.

Why one object: the loop then says *what* happened (a step, an epoch) and this decides where it
goes, how often, and only on the main process under DDP.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hjepa.core.io import write_text
from hjepa.core.progress import progress_bar
from hjepa.models.hjepa import HJEPA, JEPAOutput
from hjepa.train.collapse import COLLAPSE_STD
from hjepa.train.distributed import DistInfo
from hjepa.train.optim import StepSchedule

EPOCH_SCALARS = ("reg_loss", "inv_loss", "effective_rank", "position_share", "knn_monitor")


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


@dataclass(frozen=True)
class EpochMeans:
    """An epoch's per-step losses averaged over its steps (and the DDP ranks)."""

    loss: float
    target_std: float
    reg_loss: float  # 0 when the regulariser is off
    inv_loss: float  # 0 when the invariance term is off
    levels: list[float]  # per hierarchy level, in order

    def entries(self, sched: StepSchedule) -> dict[str, Any]:
        """The losses and the schedule's values in an epoch row, in the log's column order."""
        return {
            "loss": self.loss,
            **{f"loss_level_{i}": v for i, v in enumerate(self.levels)},
            "lr": sched.lr,
            "weight_decay": sched.weight_decay,
            "ema_momentum": sched.momentum,
            "target_std": self.target_std,
            "reg_loss": self.reg_loss,
            "inv_loss": self.inv_loss,
        }


class StepSums:
    """One epoch's per-step losses summed on the device: ``add`` costs no host sync (only the
    logging interval's ``.item()`` does); ``means`` syncs once, at the epoch's end, and
    averages over the DDP ranks."""

    def __init__(self, levels: int, device: torch.device) -> None:
        self.total = torch.zeros(levels + 4, device=device)
        self.steps = 0

    def add(self, out: JEPAOutput) -> None:
        zero = out.target_std.new_zeros(())
        extras = [out.reg_loss, out.inv_loss]
        self.total += torch.stack(
            [out.loss.detach().float(), out.target_std.float()]
            + [(v if v is not None else zero).float() for v in extras]
            + [v.float() for v in out.level_losses]
        )
        self.steps += 1

    def means(self, dist: DistInfo) -> EpochMeans:
        mean = self.total / max(self.steps, 1)
        if dist.enabled:
            torch.distributed.all_reduce(mean)
            mean = mean / dist.world_size
        m = mean.tolist()
        return EpochMeans(m[0], m[1], m[2], m[3], m[4:])


def final_metrics(
    last: dict[str, Any],
    *,
    epochs: int,
    steps: int,
    wall_time: float,
    batch_size: int,
    collapse: dict[str, Any],
    encoder_params: int,
    layerscale: bool,
) -> dict[str, Any]:
    """``metrics/pretrain.json``: the last epoch's row (loss, levels, health) with the run's
    size, speed and collapse verdicts: ``collapsed`` is the complete kind (target std below
    ``COLLAPSE_STD``), ``collapse`` the dimensional one (``CollapseCheck.as_metrics``)."""
    return {
        "loss": last["loss"],
        **{k: v for k, v in last.items() if k.startswith("loss_level_")},
        "epochs": epochs,
        "steps": steps,
        "wall_time_s": round(wall_time, 3),
        "images_per_s": round(steps * batch_size / max(wall_time, 1e-9), 2),
        "target_std": last["target_std"],
        "effective_rank": last["effective_rank"],
        "position_share": last["position_share"],
        "collapsed": bool(last["target_std"] < COLLAPSE_STD),
        "collapse": collapse,
        "encoder_params": encoder_params,
        "layerscale": layerscale,
    }


def write_tsv(path: Path, rows: list[dict[str, Any]]) -> None:
    """The epoch rows as a tab-separated table (columns of the newest row), written atomically."""
    if not rows:
        return
    columns = list(rows[-1].keys())
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(_fmt(row.get(c, "")) for c in columns))
    write_text(path, "\n".join(lines) + "\n")


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


class RunLog:
    """Progress and logs of one run; ``rows`` (one per finished epoch) travel in checkpoints."""

    def __init__(
        self,
        runs_dir: Path,
        experiment: str,
        log_every: int,
        is_main: bool,
    ) -> None:
        self.run_dir = runs_dir / experiment
        self.log_every = log_every
        self.is_main = is_main
        self.rows: list[dict[str, Any]] = []
        self._writer: Any = None
        self._bar: Any = None

    def open(self, start_step: int, total_steps: int) -> None:
        """Start the bar and TensorBoard at ``start_step`` (> 0 when resumed)."""
        # A bar on a terminal; in a log (DVC, Prefect, CI) a plain line every 20 s.
        self._bar = progress_bar(total_steps, start_step, "pretrain", self.is_main)
        if not self.is_main or start_step >= total_steps:
            return  # a resume of a finished run trains nothing: no empty events file
        from torch.utils.tensorboard import SummaryWriter

        if start_step == 0 and self.run_dir.exists():
            shutil.rmtree(self.run_dir)  # a fresh run: no stale curves from an older one
        self._writer = SummaryWriter(str(self.run_dir), purge_step=start_step or None)

    def step(
        self,
        step: int,
        epoch_label: str,
        out: Any,
        sched: StepSchedule,
        images_per_s: float,
        grad_norm: torch.Tensor,
        model: HJEPA,
    ) -> None:
        """One optimiser step done (``step`` counts from 1); TensorBoard every ``log_every``."""
        if self._writer is not None and step % self.log_every == 0:
            w = self._writer
            loss = float(out.loss.detach())
            w.add_scalar("loss/total", loss, step)
            for i, v in enumerate(out.level_losses):
                w.add_scalar(f"loss/level_{i}", float(v), step)
            w.add_scalar("schedule/lr", sched.lr, step)
            w.add_scalar("schedule/weight_decay", sched.weight_decay, step)
            w.add_scalar("schedule/ema_momentum", sched.momentum, step)
            w.add_scalar("repr/target_std", float(out.target_std), step)
            w.add_scalar("perf/images_per_s", images_per_s, step)
            w.add_scalar("train/grad_norm", float(grad_norm), step)
            for key, value in gamma_stats(model).items():
                tag, block = key.removeprefix("gamma_").split("_block")
                w.add_scalar(f"layerscale_{tag}/block{block}_mean_abs_gamma", value, step)
            self._bar.set_postfix(
                epoch=epoch_label, loss=f"{loss:.4f}", img_s=f"{images_per_s:.0f}"
            )
        self._bar.update(1)

    def epoch(self, row: dict[str, Any]) -> None:
        """One epoch done: keep its row and chart its scalars. The TSV is written once, when the
        run ends (``write_tsv``): a run that fails midway leaves the previous run's log intact
        (it is a persistent DVC out), and a resumed run rebuilds it from its checkpoint's rows."""
        self.rows.append(row)
        if self._writer is not None:
            self._writer.add_scalar("epoch/loss", row["loss"], row["step"])
            for key in EPOCH_SCALARS:
                if isinstance(row.get(key), float):
                    self._writer.add_scalar(f"repr/{key}", row[key], row["step"])
            self._writer.add_scalar("epoch/data_wait_frac", row["data_wait_frac"], row["step"])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
