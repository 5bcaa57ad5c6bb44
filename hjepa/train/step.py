"""One optimisation step of H-JEPA: the model and what moves it.

The context encoder and predictor learn under AdamW on the step's schedules (lr, weight decay);
the EMA target encoder follows the context encoder after each step. Kept apart from the loop
(hjepa.train.trainer), which decides which batch comes next, what is logged and when state is
saved: tests and benchmarks drive a step directly, exactly as the loop does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hjepa.core.config import Params
from hjepa.models.hjepa import HJEPA, JEPAOutput, Masks
from hjepa.train.device_setup import training_module
from hjepa.train.distributed import DistInfo
from hjepa.train.ema import ema_update
from hjepa.train.optim import Schedules, StepSchedule, make_optimizer


class TrainStep:
    """``model`` on ``device`` (compiled blocks and DDP as the params and torchrun say), its
    optimiser and the run's ``schedules``; calling it trains on one batch."""

    def __init__(
        self,
        params: Params,
        device: torch.device,
        dist: DistInfo,
        steps_per_epoch: int,
        log: Callable[[str], None],
    ) -> None:
        t = params.train
        self.schedules = Schedules(t, params.ema, steps_per_epoch)
        if t.warmup_epochs_used < t.warmup_epochs and dist.is_main:
            used = t.warmup_epochs_used
            log(f"notice: train.warmup_epochs {t.warmup_epochs} > train.epochs - 1; using {used}")
        self.model = HJEPA.from_params(params.model, params.data).to(device)
        self.train_model = training_module(self.model, device, dist.enabled, t.compile, log)
        self.optimizer = make_optimizer(self.model, t.lr)
        self.grad_clip = t.grad_clip
        self.device_type = device.type
        self.autocast = device.type == "cuda"  # bf16 on GPUs (on this CPU it was slower)

    def set_schedules(self, step: int) -> StepSchedule:
        """Put the optimiser on global ``step``'s lr and weight decay; return the schedule."""
        return self.schedules.apply(self.optimizer, step)

    def __call__(
        self,
        images: torch.Tensor,
        masks: Masks,
        momentum: float,
        second_view: torch.Tensor | None = None,
    ) -> tuple[JEPAOutput, torch.Tensor]:
        """Forward, backward, clip, AdamW step, then the EMA update with ``momentum``; returns
        the output and the gradient norm before clipping (0 when ``train.grad_clip`` is 0)."""
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.train_model(images, masks, second_view)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.grad_clip > 0:
            trained = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = nn.utils.clip_grad_norm_(trained, self.grad_clip)
        else:
            grad_norm = torch.zeros(())
        self.optimizer.step()
        ema_update(self.model.target_encoder, self.model.context_encoder, momentum)
        return out, grad_norm
