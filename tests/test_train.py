"""Pretraining: learning, exact kill-and-resume, params-bound checkpoints, EMA, TensorBoard, DDP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_stage_subprocess, stage_dir, stage_env, tiny_params

from hjepa.core.config import parse_params
from hjepa.train.checkpoint import list_checkpoints
from hjepa.train.step import TrainStep
from hjepa.train.trainer import Pretrainer, PretrainPaths


def paths_in(d: Path) -> PretrainPaths:
    return PretrainPaths.under(d)


def encoder_state(d: Path) -> dict[str, torch.Tensor]:
    return torch.load(d / "models" / "encoder_ema.pt", weights_only=True)["state_dict"]


def log_rows(d: Path) -> list[dict[str, str]]:
    with open(d / "metrics" / "pretrain_log.tsv") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


DETERMINISTIC = ("epoch", "step", "loss", "loss_level_0", "loss_level_1", "lr", "target_std")


@pytest.mark.slow
def test_loss_decreases_on_digits(tmp_path, prepared_digits):
    d = stage_dir(tmp_path, prepared_digits)
    params = parse_params(tiny_params(**{"train.epochs": 6, "train.batch_size": 64}))
    metrics = Pretrainer(params, paths_in(d), log=lambda m: None).run()
    rows = log_rows(d)
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 6
    # A real decrease: the last epochs' mean loss is clearly below the first epoch's.
    assert sum(losses[-2:]) / 2 < 0.8 * losses[0], losses
    n_train = len(__import__("numpy").load(prepared_digits / "train_labels.npy"))
    assert metrics["steps"] == 6 * (n_train // 64)
    assert (d / "models" / "encoder_ema.pt").is_file()
    saved = json.loads((d / "metrics" / "pretrain.json").read_text())
    assert saved["epochs"] == 6 and "loss_level_1" in saved and saved["images_per_s"] > 0


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    start = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path} appeared: {proc.stderr.read()}")
        if time.time() - start > timeout:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.02)


def _uninterrupted(tmp_path: Path, prepared: Path, **overrides) -> Path:
    (tmp_path / "ref").mkdir()
    ref = stage_dir(tmp_path / "ref", prepared, **overrides)
    run_stage_subprocess("pipeline.pretrain", ref)
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_sigkill_after_checkpoint_then_resume_is_bitwise_identical(
    tmp_path, prepared_digits, workers
):
    overrides = {"train.epochs": 4, "train.checkpoint_every": 1, "train.num_workers": workers}
    ref = _uninterrupted(tmp_path, prepared_digits, **overrides)

    (tmp_path / "run").mkdir()
    d = stage_dir(tmp_path / "run", prepared_digits, **overrides)
    env = stage_env(d)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.pretrain"],
        cwd=d,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(d / "models" / "checkpoints" / "ckpt_epoch0002.pt.sha256", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (d / "models" / "encoder_ema.pt").exists()  # it really died before the end

    resumed = run_stage_subprocess("pipeline.pretrain", d)
    assert "resuming from" in resumed.stderr + resumed.stdout
    a, b = encoder_state(ref), encoder_state(d)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ref_rows, rows = log_rows(ref), log_rows(d)
    assert [[r[c] for c in DETERMINISTIC] for r in rows] == [
        [r[c] for c in DETERMINISTIC] for r in ref_rows
    ]


@pytest.mark.slow
def test_mid_write_kill_and_corrupt_checkpoint_fall_back(tmp_path, prepared_digits):
    overrides = {"train.epochs": 3, "train.checkpoint_every": 1, "train.keep_checkpoints": 3}
    ref = _uninterrupted(tmp_path, prepared_digits, **overrides)
    (tmp_path / "run").mkdir()
    d = stage_dir(tmp_path / "run", prepared_digits, **overrides)
    # Leave the state a crash would: epoch 1 and 2 good, epoch 3 corrupt, a half-written temp file.
    run_stage_subprocess("pipeline.pretrain", d)
    ckpts = d / "models" / "checkpoints"
    (d / "models" / "encoder_ema.pt").unlink()
    last = ckpts / "ckpt_epoch0003.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # truncated
    (ckpts / ".ckpt_epoch0003.pt.abc.tmp").write_bytes(b"partial")
    second = ckpts / "ckpt_epoch0002.pt"
    flipped = bytearray(second.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # corrupt, same size
    second.write_bytes(bytes(flipped))

    out = run_stage_subprocess("pipeline.pretrain", d)
    text = out.stdout + out.stderr
    assert "ckpt_epoch0003.pt skipped: size" in text
    assert "ckpt_epoch0002.pt skipped: sha256 mismatch" in text
    assert "resuming from" in text and "ckpt_epoch0001.pt" in text
    assert not (ckpts / ".ckpt_epoch0003.pt.abc.tmp").exists()
    a, b = encoder_state(ref), encoder_state(d)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_checkpoint_under_other_params_is_not_resumed(tmp_path, prepared_digits):
    d = stage_dir(tmp_path, prepared_digits, **{"train.epochs": 2})
    run_stage_subprocess("pipeline.pretrain", d)
    assert list_checkpoints(d / "models" / "checkpoints")
    stage_dir(tmp_path, prepared_digits, **{"train.epochs": 2, "train.lr": 0.002})
    out = run_stage_subprocess("pipeline.pretrain", d)
    text = out.stdout + out.stderr
    assert "written under different params" in text and "resuming from" not in text
    # Same params again: now it resumes (from the finished run's last checkpoint).
    event_files = sorted(p.name for p in (d / "runs").rglob("*tfevents*"))
    again = run_stage_subprocess("pipeline.pretrain", d)
    assert "resuming from" in again.stdout + again.stderr
    # Nothing was left to train: no new (empty) TensorBoard events file.
    assert sorted(p.name for p in (d / "runs").rglob("*tfevents*")) == event_files


def test_ema_target_is_the_momentum_weighted_average(tmp_path, prepared_digits, monkeypatch):
    import hjepa.train.step as step_module

    d = stage_dir(tmp_path, prepared_digits)
    params = parse_params(
        tiny_params(
            **{
                "train.epochs": 1,
                "train.batch_size": 256,
                "ema.momentum_start": 0.5,
                "ema.momentum_end": 0.9,
                "model.layerscale.use_layerscale": True,
            }
        )
    )
    trainer = Pretrainer(params, paths_in(d), log=lambda m: None)
    target0 = {k: v.clone() for k, v in trainer.model.target_encoder.state_dict().items()}
    snapshots: list[dict[str, torch.Tensor]] = []
    real_update = step_module.ema_update

    def recording_update(target, online, momentum):
        snapshots.append({k: v.detach().clone() for k, v in online.state_dict().items()})
        real_update(target, online, momentum)

    monkeypatch.setattr(step_module, "ema_update", recording_update)
    trainer.run()
    steps = len(snapshots)
    assert steps == trainer.total_steps >= 3
    expected = target0
    for k, online in enumerate(snapshots):
        m = 0.5 + (0.9 - 0.5) * k / steps  # linear schedule, computed here independently
        expected = {
            key: (m * expected[key] + (1 - m) * online[key])
            if online[key].is_floating_point()
            else online[key]
            for key in expected
        }
    final = trainer.model.target_encoder.state_dict()
    gammas = [k for k in final if k.endswith("ls1.gamma")]
    assert gammas
    for key in final:
        assert torch.allclose(final[key], expected[key], atol=1e-6), key


def test_tensorboard_has_the_listed_scalars(tmp_path, prepared_digits):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d = stage_dir(tmp_path, prepared_digits)
    params = parse_params(
        tiny_params(**{"model.layerscale.use_layerscale": True, "train.log_every": 1})
    )
    Pretrainer(params, paths_in(d), log=lambda m: None, experiment="exp1").run()
    acc = EventAccumulator(str(d / "runs" / "exp1"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in [
        "loss/total",
        "loss/level_0",
        "loss/level_1",
        "schedule/lr",
        "schedule/weight_decay",
        "schedule/ema_momentum",
        "repr/target_std",
        "perf/images_per_s",
        "layerscale_ctx/block0_mean_abs_gamma",
        "layerscale_tgt/block1_mean_abs_gamma",
    ]:
        assert tag in tags, (tag, sorted(tags))
    assert (
        len(acc.Scalars("loss/total"))
        == Pretrainer(params, paths_in(d), log=lambda m: None).total_steps
    )


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path, prepared_digits):
    overrides = {"train.epochs": 1, "train.batch_size": 256, "mask.context_batching": "trim"}
    single = _uninterrupted(tmp_path, prepared_digits, **overrides)
    (tmp_path / "ddp").mkdir()
    d = stage_dir(tmp_path / "ddp", prepared_digits, **overrides)
    env = stage_env(d)
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(29500 + os.getpid() % 1000),
            "-m",
            "pipeline.pretrain",
        ],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((single / "metrics" / "pretrain.json").read_text())
    two = json.loads((d / "metrics" / "pretrain.json").read_text())
    assert two["steps"] == one["steps"]
    assert two["loss"] == pytest.approx(one["loss"], rel=2e-3)
    a, b = encoder_state(single), encoder_state(d)
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff < 1e-3


@pytest.mark.slow
def test_rerun_after_finished_run_regenerates_deleted_outputs(tmp_path, prepared_digits):
    """DVC deletes a stage's outputs before rerunning it; resuming from the final checkpoint
    must write all of them again, identical to the first run (not just the encoder)."""
    d = stage_dir(tmp_path, prepared_digits, **{"train.epochs": 2})
    run_stage_subprocess("pipeline.pretrain", d)
    tsv = (d / "metrics" / "pretrain_log.tsv").read_text()
    enc = encoder_state(d)
    for out in ("metrics/pretrain_log.tsv", "metrics/pretrain.json", "models/encoder_ema.pt"):
        (d / out).unlink()
    again = run_stage_subprocess("pipeline.pretrain", d)
    assert "resuming from" in again.stdout + again.stderr
    assert (d / "metrics" / "pretrain_log.tsv").read_text() == tsv
    assert (d / "metrics" / "pretrain.json").is_file()
    assert all(torch.equal(enc[k], v) for k, v in encoder_state(d).items())


def test_checkpoints_of_other_params_are_set_aside_until_the_new_run_has_its_own(
    tmp_path, prepared_digits, monkeypatch
):
    """Issue 17: a run under new params that fails before its first checkpoint loses nothing;
    going back to the old params resumes from the old checkpoints."""
    d = stage_dir(tmp_path, prepared_digits)
    ckpts = d / "models" / "checkpoints"
    old_params = parse_params(tiny_params(**{"train.epochs": 1}))
    Pretrainer(old_params, paths_in(d), log=lambda m: None).run()
    old = {p.name: p.read_bytes() for p in list_checkpoints(ckpts)}
    assert old

    new_params = parse_params(tiny_params(**{"train.epochs": 1, "train.lr": 0.002}))
    logs: list[str] = []
    failing = Pretrainer(new_params, paths_in(d), log=logs.append)

    def killed(*args, **kwargs):
        raise RuntimeError("killed before the first checkpoint")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="killed"):
        patch.setattr(TrainStep, "__call__", killed)
        failing.run()
    assert any("set aside" in m for m in logs), logs
    aside = ckpts / ".superseded"
    assert {p.name: p.read_bytes() for p in list_checkpoints(aside)} == old
    assert list_checkpoints(ckpts) == []

    logs.clear()
    Pretrainer(old_params, paths_in(d), log=logs.append).run()
    assert any("put back" in m for m in logs) and any("resuming from" in m for m in logs), logs
    assert not aside.exists()

    Pretrainer(new_params, paths_in(d), log=lambda m: None).run()  # writes its own: old go
    assert not aside.exists()
    assert all(p.read_bytes() != old.get(p.name) for p in list_checkpoints(ckpts))


def test_one_loader_serves_every_epoch_of_a_run(tmp_path, prepared_digits, monkeypatch):
    """Workers start once per run, not once per epoch (batches.EpochSpan): the run asks for one
    loader, over all its epochs' batches, and trains every one of them."""
    import hjepa.train.trainer as train

    d = stage_dir(tmp_path, prepared_digits)
    params = parse_params(tiny_params(**{"train.epochs": 3, "train.batch_size": 256}))
    trainer = Pretrainer(params, paths_in(d), log=lambda m: None)
    spans: list[int] = []
    real_make_loader = train.make_loader

    def counting_make_loader(batches, num_workers, pin_memory=False):
        spans.append(len(batches))
        return real_make_loader(batches, num_workers, pin_memory)

    monkeypatch.setattr(train, "make_loader", counting_make_loader)
    trainer.run()
    assert spans == [3 * trainer.steps_per_epoch]
    assert [int(row["step"]) for row in log_rows(d)] == [
        trainer.steps_per_epoch * e for e in (1, 2, 3)
    ]


@pytest.mark.slow
def test_train_compile_compiles_the_blocks_and_trains_the_same_model(tmp_path, prepared_digits):
    """``train.compile`` runs every transformer block through torch.compile (graphs are really
    built) and learns what the uncompiled run learns: the same losses, the same checkpoint keys.
    """
    from torch._dynamo.utils import counters

    runs = {}
    for compiled in (False, True):
        (tmp_path / str(compiled)).mkdir()
        d = stage_dir(tmp_path / str(compiled), prepared_digits)
        params = parse_params(tiny_params(**{"train.compile": compiled}))
        lines: list[str] = []
        counters.clear()
        trainer = Pretrainer(params, paths_in(d), log=lines.append)
        trainer.run()
        blocks = [m for m in trainer.model.modules() if type(m).__name__ == "Block"]
        graphs = counters["stats"]["unique_graphs"]
        runs[compiled] = (log_rows(d), encoder_state(d), blocks, graphs, lines)
    eager, compiled = runs[False], runs[True]
    assert [b._compiled_call_impl for b in eager[2]] == [None] * len(eager[2])
    assert len(compiled[2]) == 5 and all(b._compiled_call_impl is not None for b in compiled[2])
    assert eager[3] == 0 and compiled[3] > 0, (eager[3], compiled[3])
    assert any("train.compile: 5 transformer blocks compiled" in line for line in compiled[4])
    for a, b in zip(eager[0], compiled[0], strict=True):
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-3)
    assert eager[1].keys() == compiled[1].keys()
