import math

import torch

from leads.models.rollout import rollout, teacher_forcing_probability


def decay(u, env):
    return -u


def test_rk4_matches_exponential_decay_with_fourth_order():
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    u0 = torch.ones(3, 2, dtype=torch.float64)
    env = torch.zeros(3, dtype=torch.long)
    errors = []
    for substeps in (2, 4, 8):
        out = rollout(decay, u0, t, env, substeps=substeps)
        exact = torch.exp(-t).view(1, -1, 1).expand_as(out)
        errors.append((out - exact).abs().max().item())
    assert errors[-1] < 1e-6
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(3.7 < o < 4.3 for o in orders), orders


def test_rollout_first_state_is_u0_and_shape():
    u0 = torch.randn(4, 2, 8, 8)
    out = rollout(decay, u0, torch.arange(6.0), torch.zeros(4, dtype=torch.long))
    assert out.shape == (4, 6, 2, 8, 8)
    assert torch.equal(out[:, 0], u0)


def test_teacher_forcing_one_restarts_from_truth_every_step():
    t = torch.arange(5.0, dtype=torch.float64)
    truth = torch.randn(2, 5, 3, dtype=torch.float64)
    env = torch.zeros(2, dtype=torch.long)
    forced = rollout(decay, truth[:, 0], t, env, truth=truth, teacher_forcing=1.0)
    # each step starts from the true previous state: one exact-ish RK4 step of decay
    one_step = rollout(decay, truth[:, :-1].reshape(-1, 3), t[:2], torch.zeros(8, dtype=torch.long))[:, 1]
    assert torch.allclose(forced[:, 1:], one_step.view(2, 4, 3))
    free = rollout(decay, truth[:, 0], t, env, truth=truth, teacher_forcing=0.0)
    assert not torch.allclose(free, forced)


def test_teacher_forcing_schedule():
    assert teacher_forcing_probability(0, 0.99, 0.99, 10) == 0.99
    assert teacher_forcing_probability(9, 0.99, 0.99, 10) == 0.99
    assert math.isclose(teacher_forcing_probability(10, 0.99, 0.99, 10), 0.99**2)
    assert teacher_forcing_probability(10_000, 0.99, 0.99, 10) < 1e-4
    values = [teacher_forcing_probability(s, 1.0, 0.9, 5) for s in range(0, 100, 5)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
