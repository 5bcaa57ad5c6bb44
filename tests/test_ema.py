"""EMA: the target encoder is exactly the momentum-weighted average, buffers and gammas included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hjepa.train.ema import ema_update, momentum_at


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.gamma = nn.Parameter(torch.full((4,), 0.1))  # named like LayerScale's
        self.register_buffer("stat", torch.zeros(4))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))


def test_momentum_schedule_endpoints_and_linearity() -> None:
    assert momentum_at(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert momentum_at(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert momentum_at(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert momentum_at(25, 100, 0.9, 0.98) == pytest.approx(0.92)
    assert momentum_at(500, 100, 0.9, 0.98) == pytest.approx(0.98)  # clamped past the end
    with pytest.raises(ValueError, match="total_steps"):
        momentum_at(0, 0, 0.9, 1.0)


def test_n_updates_equal_the_independently_computed_average() -> None:
    torch.manual_seed(0)
    online, target = Net(), Net()
    expected = {k: v.clone().double() for k, v in target.state_dict().items()}
    for step in range(5):
        with torch.no_grad():
            for t in list(online.parameters()) + [online.stat]:
                t.add_(torch.randn_like(t))
            online.count += 1
        m = momentum_at(step, 5, 0.5, 0.9)
        ema_update(target, online, m)
        for k, v in online.state_dict().items():
            if v.is_floating_point():
                expected[k] = m * expected[k] + (1 - m) * v.double()
    for k, v in target.state_dict().items():
        if k == "count":
            assert int(v) == 0  # integer buffers are not averaged
        else:
            torch.testing.assert_close(v.double(), expected[k], rtol=1e-6, atol=1e-6)
            assert not torch.equal(v, online.state_dict()[k])


def test_momentum_one_freezes_and_zero_copies() -> None:
    torch.manual_seed(0)
    online, target = Net(), Net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, online, 1.0)
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k])
    ema_update(target, online, 0.0)
    for k, v in target.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, online.state_dict()[k])


def test_mismatched_modules_and_bad_momentum_are_rejected() -> None:
    with pytest.raises(ValueError, match="different tensors"):
        ema_update(Net(), nn.Linear(3, 4), 0.9)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(Net(), Net(), 1.5)
