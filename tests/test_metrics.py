import math

import pytest
import torch

from leads.evaluation.metrics import mean_std, mse, relative_l2, relative_l2_per_step


def traj(values):
    """(1, n_t, 2) trajectory from per-time scalars repeated over 2 components."""
    v = torch.tensor(values, dtype=torch.float64)
    return v.view(1, -1, 1).expand(1, len(values), 2).clone()


def test_relative_l2_known_value_and_excludes_t0():
    true = traj([5.0, 3.0, 4.0])
    pred = traj([100.0, 3.0, 4.0])  # wrong only at t=0, which is not scored
    assert relative_l2(pred, true).item() == 0.0
    pred = traj([5.0, 0.0, 0.0])  # predicting zero gives relative error exactly 1
    assert relative_l2(pred, true).item() == pytest.approx(1.0)
    pred = traj([5.0, 6.0, 8.0])  # (3,4) -> (6,8): ||e|| = ||y||
    assert relative_l2(pred, true).item() == pytest.approx(1.0)
    pred = traj([5.0, 3.3, 4.4])
    assert relative_l2(pred, true).item() == pytest.approx(0.1)


def test_mse_known_value():
    true = traj([1.0, 1.0, 1.0])
    pred = traj([9.0, 2.0, 3.0])  # errors 1 and 2 on 2 components each -> (1+1+4+4)/4
    assert mse(pred, true).item() == pytest.approx(2.5)


def test_per_step_and_batch():
    true = torch.cat([traj([1.0, 1.0, 2.0]), traj([1.0, 2.0, 2.0])])
    pred = torch.cat([traj([0.0, 1.5, 2.0]), traj([1.0, 2.0, 3.0])])
    step = relative_l2_per_step(pred, true)
    assert step.shape == (2, 2)
    assert torch.allclose(step, torch.tensor([[0.5, 0.0], [0.0, 0.5]], dtype=torch.float64))
    assert relative_l2(pred, true).shape == (2,)


def test_mean_std():
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert mean_std([2.0]) == (2.0, 0.0)
    m, s = mean_std([])
    assert math.isnan(m) and math.isnan(s)


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        relative_l2(traj([1.0, 2.0]), traj([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="t=0"):
        relative_l2(traj([1.0]), traj([1.0]))
