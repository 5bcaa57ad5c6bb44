"""Process settings for a training run on its device: CPU threads and the attention kernels.

Both were found on an H200 (2026-12-04, benchmarks/gpu_check.sh and a per-step profile): the
ViT-B step varied from 55 ms to over a second from one batch to the next while the GPU's own
work stayed near 50 ms.
"""

from __future__ import annotations

import torch


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
