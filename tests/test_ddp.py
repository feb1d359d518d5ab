"""Lightning DDP on CPU (gloo): each rank trains on a disjoint share of the single-process
batch and draws the same teacher-forcing numbers for it, so a 2-process run computes what one
process computes up to float32 rounding (summation order of the gradient all-reduce).

Stated tolerance: relative 1e-5 on every score and weight after training (measured: 2e-7 on
weights, 1e-7 on scores). The context probe's R² is a ratio of near-cancelling sums (values
around -200 on tiny runs), which amplifies rounding: relative 1e-3 there (measured 2e-5).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from fakes import LinearDecay
from faults import run_dirs, run_py, tiny_sets
from tiny import tiny_config

from leads.datasets.datamodule import TrajectoryDataModule
from leads.datasets.sharding import ShardedBalancedBatchSampler
from leads.datasets.torch_data import BalancedBatchSampler
from leads.envs.errors import UserError
from leads.models.forecaster import Forecaster, TrainingDiverged
from leads.reporting import leaderboard
from leads.reporting.results import read_rows

SYSTEM = "lotka_volterra"


def _fake_trainer(rank: int, world: int, done: int = 0) -> SimpleNamespace:
    progress = SimpleNamespace(current=SimpleNamespace(completed=done))
    return SimpleNamespace(global_rank=rank, world_size=world, global_step=5,
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))


@pytest.mark.parametrize("n_env, items, per_env, world", [(3, 12, 2, 2), (9, 17, 2, 2), (4, 10, 3, 3), (9, 16, 1, 3)])
def test_rank_shares_are_disjoint_equal_and_make_up_the_single_process_batch(n_env, items, per_env, world):
    single = list(BalancedBatchSampler(n_env, items, per_env, seed=3))
    shares = [list(ShardedBalancedBatchSampler(n_env, items, per_env, seed=3, rank=r, world_size=world))
              for r in range(world)]
    assert all(len(s) == len(single) for s in shares)
    for b, batch in enumerate(single):
        parts = [s[b] for s in shares]
        assert len({len(p) for p in parts}) == 1  # equal shares: DDP's gradient mean is the batch mean
        assert sorted(i for p in parts for i in p) == sorted(batch)
        for r, p in enumerate(parts):
            assert p == batch[r::world]  # the positions the teacher-forcing draws assume
        if per_env % world == 0:  # then every share is balanced too
            for p in parts:
                assert Counter(i // items for i in p) == {e: per_env // world for e in range(n_env)}


def test_an_unshareable_batch_is_a_user_error():
    with pytest.raises(UserError, match="multiple of 18"):
        ShardedBalancedBatchSampler(9, 16, 1, rank=0, world_size=2)


def test_resumed_sampler_skips_the_batches_already_trained_on():
    full = list(ShardedBalancedBatchSampler(3, 12, 2, seed=1))
    resumed = ShardedBalancedBatchSampler(3, 12, 2, seed=1, skip=4)
    assert list(resumed) == full[4:]
    resumed.set_epoch(0)
    assert list(resumed) == full  # only the epoch it resumed in is cut short
    at_end = ShardedBalancedBatchSampler(3, 12, 2, seed=1, skip=len(full))  # checkpoint at the end of an epoch
    assert list(at_end) == full


def test_datamodule_gives_each_rank_its_share(tmp_path):
    cfg = {"dir": str(tmp_path), "n_train": 4, "batch_size": 6, "window": 4}
    batches = {}
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        dm = TrajectoryDataModule(LinearDecay(), cfg, progress=False)
        dm.trainer = _fake_trainer(rank, world)
        batches[rank, world] = [b["traj"] * 100 + b["env"] * 10 + (b["t"][:, 0] * 10).round().long()
                                for b in dm.train_dataloader()]
    for one, r0, r1 in zip(batches[0, 1], batches[0, 2], batches[1, 2]):
        assert torch.equal(one[0::2], r0) and torch.equal(one[1::2], r1)


def test_teacher_forcing_draws_follow_the_global_batch_position(tmp_path):
    cfg = tiny_config(SYSTEM, tmp_path)
    module = Forecaster(cfg, (2,), ["a", "b"])
    draws = {}
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        module._trainer = _fake_trainer(rank, world)
        torch.manual_seed(rank)  # the global RNG plays no part
        draws[rank, world] = module._teacher_forcing_draws(7, 8 // world, torch.device("cpu"))
    assert draws[0, 1].shape == (5, 8)
    assert torch.equal(draws[0, 1][:, 0::2], draws[0, 2]) and torch.equal(draws[0, 1][:, 1::2], draws[1, 2])


def test_a_rank_stops_when_another_rank_diverges(tmp_path):
    module = Forecaster(tiny_config(SYSTEM, tmp_path), (2,), ["a", "b"])
    votes = []
    trainer = _fake_trainer(0, 2)
    trainer.strategy = SimpleNamespace(reduce_boolean_decision=lambda local, all: votes.append(local) or True)
    module._trainer = trainer
    fine = torch.tensor([0.5, 0.25])
    with pytest.raises(TrainingDiverged, match="diverged at step 5 .*another DDP process"):
        module._check_loss(fine.mean(), fine, torch.tensor([0, 1]))
    assert votes == [False]  # this rank's own loss was fine; it voted and stopped with the others
    trainer.strategy.reduce_boolean_decision = lambda local, all: local
    module._check_loss(fine.mean(), fine, torch.tensor([0, 1]))  # nobody diverged: goes on


def _close(a: float | None, b: float | None, rtol: float) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return a is None and b is None or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= rtol * abs(a)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_and_is_counted_once(tmp_path):
    # 9 environments x 2 items = 18 per batch, shared 9 + 9.
    sets = ["train.max_steps=8", "train.val_every=4", "data.batch_size=18", "adapt.sets=[interp]",
            f"data.dir={tmp_path / 'data'}"]
    single = run_py(["--env", SYSTEM, "--no-progress", *tiny_sets(SYSTEM, tmp_path / "one", *sets)])
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_py(["--env", SYSTEM, "--no-progress", "--devices", "2", "--strategy", "ddp", "--device", "cpu",
                  *tiny_sets(SYSTEM, tmp_path / "ddp", *sets)])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in ddp.stderr  # two processes joined (on CPU: gloo)
    (one_dir,), (ddp_dir,) = run_dirs(tmp_path / "one", SYSTEM), run_dirs(tmp_path / "ddp", SYSTEM)  # rank 1: no dir
    assert one_dir.name == ddp_dir.name  # devices and strategy are not part of what a run is

    a = torch.load(one_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(ddp_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-5 * float(value.abs().max()))

    rows = {}
    for name in ("one", "ddp"):
        path = tmp_path / name / "results" / SYSTEM / "results.jsonl"
        got = [json.loads(line) for line in path.read_text().splitlines()]
        keys = [(r["kind"], r["split"], r["environment"], r["metric"]) for r in got]
        assert len(keys) == len(set(keys))  # rank 1 wrote nothing: every row once
        rows[name] = dict(zip(keys, (r["value"] for r in got)))
    assert rows["one"].keys() == rows["ddp"].keys()
    for key, value in rows["one"].items():
        assert _close(value, rows["ddp"][key], 1e-3 if key[0] == "probe" else 1e-5), (key, value, rows["ddp"][key])

    lb = leaderboard.build(read_rows(tmp_path / "ddp" / "results" / SYSTEM / "results.jsonl"), SYSTEM, "quick", 1)
    assert lb.runs == [ddp_dir.name] and [(ln.method, ln.seeds) for ln in lb.lines] == [("lowrank", [0])]
    assert json.loads((ddp_dir / "state.json").read_text())["global_step"] == 8
