"""The training process's settings on its device (hjepa/train/device_setup.py)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from hjepa.train.device_setup import (
    BLOCK_VARIANTS,
    compile_blocks,
    main_process_threads,
    prefer_shape_free_attention,
)


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


def test_compile_blocks_compiles_every_transformer_block_and_room_for_their_variants() -> None:
    """Every timm block, nested anywhere, is compiled in place (same parameters and keys); the
    other modules are not; torch's cache holds enough variants of the shared block code."""
    import torch._dynamo.config as dynamo_config

    model = nn.ModuleDict(
        {
            "encoder": nn.Sequential(Block(16, 2), Block(16, 2)),
            "predictor": nn.ModuleList([Block(8, 2)]),
            "head": nn.Linear(8, 16),
        }
    )
    keys = list(model.state_dict())
    before = dynamo_config.recompile_limit
    try:
        dynamo_config.recompile_limit = 8
        assert compile_blocks(model) == 3
        assert dynamo_config.recompile_limit == BLOCK_VARIANTS
    finally:
        dynamo_config.recompile_limit = before
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert model["head"]._compiled_call_impl is None
    assert list(model.state_dict()) == keys
