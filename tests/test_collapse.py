"""Issue 20: dimensional collapse (effective rank of the pooled features far below the width, or
falling fast) is detected during pretraining and reported in the stage log, in
metrics/pretrain.json and in the report. Each test fails if the detector or its wiring goes."""

from __future__ import annotations

import json

import pytest
from conftest import stage_dir, tiny_params

from hjepa.core.config import parse_params
from hjepa.train import collapse
from hjepa.train.collapse import check_collapse, rank_threshold
from hjepa.train.trainer import Pretrainer, PretrainPaths

# Per-epoch effective rank (of 128) of real digits runs, seed 0, metrics/pretrain_log.tsv.
DEFAULT_40_EPOCHS = [
    5.1, 5.2, 9.1, 12.6, 14.9, 18.3, 23.4, 27.6, 32.0, 35.3, 38.0, 39.9, 41.6, 43.0, 44.6, 45.8,
    46.8, 47.7, 48.4, 49.1, 49.5, 50.0, 50.6, 51.1, 51.5, 52.0, 52.5, 52.7, 53.0, 53.3, 53.5, 53.7,
    53.9, 54.0, 54.1, 54.2, 54.2, 54.3, 54.3, 54.4,
]  # fmt: skip
HJEPA_ALONE_4_EPOCHS = [5.08, 4.72, 3.97, 3.74]  # invariance_weight=0, vicreg_weight=0
DEFAULT_4_EPOCHS = [5.08, 5.2, 8.95, 11.87]


def test_threshold_is_five_percent_of_the_width_with_a_floor():
    assert rank_threshold(128) == pytest.approx(6.4)
    assert rank_threshold(768) == pytest.approx(38.4)
    assert rank_threshold(16) == 2.0  # narrow encoders: the floor
    # 256 images span at most 255 directions: a wider encoder is judged against those.
    assert rank_threshold(768, samples=256) == pytest.approx(0.05 * 255)
    assert rank_threshold(128, samples=256) == pytest.approx(6.4)


def test_healthy_default_run_does_not_warn_although_it_starts_below_the_threshold():
    verdict = check_collapse(DEFAULT_40_EPOCHS, width=128, epochs=40)
    assert not verdict.detected and verdict.epoch is None and verdict.reason is None
    assert verdict.effective_rank == 54.4 and verdict.best_effective_rank == 54.4
    # Its first two epochs are below 6.4, but the low-rank signal is armed only from epoch 20.
    assert min(DEFAULT_40_EPOCHS[:2]) < rank_threshold(128)
    assert not check_collapse(DEFAULT_40_EPOCHS[:19], width=128, epochs=40).detected


@pytest.mark.parametrize("final", [4.2, 4.5])  # issue 20's H-JEPA alone; issue 9's old defaults
def test_collapsed_run_warns_at_the_middle_of_the_run(final):
    ranks = [5.0] * 10 + [final] * 10
    verdict = check_collapse(ranks, width=128, epochs=20)
    assert verdict.detected and verdict.reason == "low_rank"
    assert verdict.epoch == 10  # the first armed epoch, not the end
    assert check_collapse(ranks[:9], width=128, epochs=20).detected is False


def test_measured_short_collapse_is_detected():
    verdict = check_collapse(HJEPA_ALONE_4_EPOCHS, width=128, epochs=4)
    assert (verdict.detected, verdict.reason, verdict.epoch) == (True, "low_rank", 2)
    assert verdict.effective_rank == 4.72


def test_a_short_run_still_climbing_does_not_warn_until_its_last_epoch():
    # Epoch 2 of 4 is armed and below 6.4, but it is a new best: the rank is still rising.
    assert not check_collapse(DEFAULT_4_EPOCHS, width=128, epochs=4).detected
    # Still below the threshold at the last epoch: that encoder is what the probe reads.
    verdict = check_collapse([5.0, 5.5, 5.9], width=128, epochs=3)
    assert (verdict.detected, verdict.reason, verdict.epoch) == (True, "low_rank", 3)


def test_a_fast_fall_warns_before_the_rank_reaches_the_floor():
    ranks = [5.0, 20.0, 40.0, 45.0, 30.0, 11.0]
    verdict = check_collapse(ranks, width=128, epochs=40)  # low rank not armed until epoch 20
    assert (verdict.detected, verdict.reason, verdict.epoch) == (True, "falling", 6)
    assert verdict.effective_rank == 11.0 > rank_threshold(128)
    assert (verdict.best_effective_rank, verdict.best_epoch) == (45.0, 4)
    # A fall to just above a quarter of the best is not reported.
    assert not check_collapse([5.0, 45.0, 11.5], width=128, epochs=40).detected


def test_a_fall_from_below_the_threshold_is_not_a_fast_fall():
    # Noise around a random init's low rank (all below 6.4) must not count as a fall.
    assert not check_collapse([6.0, 1.4, 5.0], width=128, epochs=40).detected


def test_warning_line_and_metrics_block_carry_the_numbers():
    verdict = check_collapse([5.0, 4.2], width=128, epochs=2)
    line = verdict.message()
    assert line.startswith("warning: dimensional collapse at epoch 2/2")
    assert "pooled features is 4.2 of 128, below the threshold of 6.4" in line and "\n" not in line
    assert verdict.as_metrics() == {
        "detected": True,
        "reason": "low_rank",
        "epoch": 2,
        "effective_rank": 4.2,
        "best_effective_rank": 5.0,
        "width": 128,
        "threshold": pytest.approx(6.4),
    }
    falling = check_collapse([5.0, 45.0, 10.0], width=128, epochs=40).message()
    assert "is 10.0 of 128, below a quarter of its best so far (45.0 at epoch 2)" in falling


def test_check_needs_at_least_one_epoch():
    with pytest.raises(ValueError, match="at least one epoch"):
        check_collapse([], width=128, epochs=4)


def test_warning_stays_a_line_of_its_own_under_a_progress_bar(capsys):
    """In a log file (DVC, Prefect) a tqdm bar redraws with carriage returns; the flows keep the
    last redraw of each line, which must be the warning itself, so it can be mapped to WARNING."""
    import sys

    from tqdm import tqdm

    from flows.dvc_run import visible_line

    bar = tqdm(total=10, file=sys.stderr, mininterval=0, desc="pretrain")
    bar.update(3)
    collapse.warn("warning: dimensional collapse at epoch 2/4: test")
    bar.update(3)
    bar.close()
    raw = capsys.readouterr().err.encode().split(b"\n")
    lines = [visible_line(line) for line in raw]
    assert "warning: dimensional collapse at epoch 2/4: test" in lines


# ------------------------------------------------------------------------------ the trainer
def _pretrain(tmp_path, prepared_digits):
    d = stage_dir(tmp_path, prepared_digits)
    params = parse_params(tiny_params(**{"train.epochs": 2}))
    metrics = Pretrainer(params, PretrainPaths.under(d), log=lambda m: None).run()
    return d, metrics


@pytest.mark.slow
def test_trainer_writes_a_collapse_block_and_stays_quiet_when_healthy(
    tmp_path, prepared_digits, capsys
):
    d, metrics = _pretrain(tmp_path, prepared_digits)
    written = json.loads((d / "metrics/pretrain.json").read_text())
    block = written["collapse"]
    assert block == metrics["collapse"]
    assert block["width"] == 16 and block["threshold"] == 2.0
    assert block["effective_rank"] == pytest.approx(metrics["effective_rank"])
    assert block["detected"] is False and block["epoch"] is None
    assert "dimensional collapse" not in capsys.readouterr().err


@pytest.mark.slow
def test_trainer_warns_once_on_stderr_and_records_the_epoch(
    tmp_path, prepared_digits, capsys, monkeypatch
):
    # A threshold of the full width makes any real encoder "collapsed": this tests the wiring.
    monkeypatch.setattr(collapse, "RANK_FRACTION", 1.0)
    d, metrics = _pretrain(tmp_path, prepared_digits)
    block = json.loads((d / "metrics/pretrain.json").read_text())["collapse"]
    assert block["detected"] is True and block["reason"] == "low_rank"
    # Epoch 1 always sets a new best (still climbing); the last epoch counts in any case.
    assert block["epoch"] == 2 and block["threshold"] == 16.0
    assert block["effective_rank"] == pytest.approx(metrics["effective_rank"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "dimensional collapse" in x]
    assert len(lines) == 1 and lines[0].startswith("warning: dimensional collapse at epoch 2/2")
