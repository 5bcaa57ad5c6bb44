"""A training run on its device: which device and process group, CPU threads, the attention
kernels, and compiled transformer blocks (``train.compile``).

The thread count and the attention kernels were found on an H200 (2026-12-04,
benchmarks/gpu_check.sh and a per-step profile): the ViT-B step varied from 55 ms to over a
second from one batch to the next while the GPU's own work stayed near 50 ms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.models.vision_transformer import Block
from torch import nn

from hjepa.core.errors import UserError
from hjepa.train.distributed import DistInfo, init_distributed


def run_device(name: str) -> tuple[torch.device, DistInfo]:
    """The run's device for ``train.device`` (auto | cpu | cuda) and its process group: under
    torchrun every rank joins the group and, on CUDA, takes the GPU of its local rank."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    dist = init_distributed(device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device, dist


def main_process_threads(device: torch.device, num_workers: int) -> int:
    """CPU threads for the training process's own torch ops.

    On CUDA with loader workers the training process only launches kernels and pins batches;
    with torch's default of one thread per core its parallel regions wait on cores that the
    workers hold (8 workers, 16 cores: median ViT-B step 266 ms at 16 threads, 170 ms at 1,
    one gpu_check run each). On the CPU the step itself is the parallel work, so the count
    stays."""
    if device.type == "cuda" and num_workers > 0:
        return 1
    return torch.get_num_threads()


def prefer_shape_free_attention(device: torch.device) -> None:
    """On CUDA, leave cuDNN's attention out of SDPA's choices (flash and memory-efficient stay).

    The context and target lengths change with every batch's masks, and cuDNN builds an
    execution plan for each new length: 1.4 ms of CPU per forward call and 3 ms per backward
    in the profile, far more for a length never seen. The flash kernels take any length."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


# Compiled variants of timm's one ``Block.forward`` that a run may need. Encoder and predictor
# blocks share that code, so each width, grad mode (the EMA target runs without), train or eval
# state (diagnostics) and padding mask or none is one more; past torch's default of 8 the blocks
# silently run uncompiled, as two configs in one process did on the H200.
BLOCK_VARIANTS = 64


def compile_blocks(model: nn.Module) -> int:
    """Compile each transformer block of ``model`` in place with ``torch.compile`` (dynamic
    shapes); returns how many.

    Block by block, not the whole model: compiling all of H-JEPA's step fails in inductor's
    backward with a stride assertion on the masked token gather (torch 2.14.1 on this CPU,
    2.11 on an H200), while the blocks, where the matmuls, norms and activations are, compile
    and fuse. Dynamic shapes because the masks give every batch new context and target lengths:
    static ones would recompile for each until torch gives up and runs them uncompiled.
    Parameters, buffers and ``state_dict`` keys are unchanged, so checkpoints, the EMA update
    and the probe see the same model."""
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compile(dynamic=True)
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, BLOCK_VARIANTS)
    return len(blocks)


def training_module(
    model: nn.Module,
    device: torch.device,
    distributed: bool,
    compile_: bool,
    log: Callable[[str], None],
) -> nn.Module:
    """``model`` (already on ``device``) as the loop calls it: with ``compile_``
    (``train.compile``) its blocks compiled in place, logged; under torchrun
    (``distributed``) wrapped in DDP, which averages the gradients over the ranks."""
    if compile_:
        n = compile_blocks(model)
        log(
            f"train.compile: {n} transformer blocks compiled (dynamic shapes); "
            "the first steps include compilation"
        )
    if not distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
