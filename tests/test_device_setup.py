"""The training process's settings on its device (hjepa/train/device_setup.py)."""

from __future__ import annotations

import torch

from hjepa.train.device_setup import main_process_threads, prefer_shape_free_attention


def test_training_process_keeps_one_cpu_thread_on_cuda_with_workers() -> None:
    """With loader workers on CUDA, the training process's parallel copies waited on cores the
    workers held (ViT-B step 327 ms against 64 ms at one thread on an H200); elsewhere the
    step itself is the CPU's parallel work and torch's count stays."""
    cores = torch.get_num_threads()
    assert main_process_threads(torch.device("cuda"), num_workers=8) == 1
    assert main_process_threads(torch.device("cuda"), num_workers=0) == cores
    assert main_process_threads(torch.device("cpu"), num_workers=8) == cores


def test_cuda_runs_leave_cudnn_attention_out_and_cpu_runs_leave_it_alone() -> None:
    """cuDNN's attention plans each new context length (the masks change it every batch);
    the switch is a process flag, so it can be read without a GPU."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        prefer_shape_free_attention(torch.device("cpu"))
        assert torch.backends.cuda.cudnn_sdp_enabled()
        prefer_shape_free_attention(torch.device("cuda"))
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
