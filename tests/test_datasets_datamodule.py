"""datasets/ torch side: windows, environment-balanced batches, env indices, workers, Lightning."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from fakes import LinearDecay

from leads.datasets.cache import ensure_split
from leads.datasets.datamodule import TrajectoryDataModule
from leads.datasets.h5 import load_split
from leads.datasets.torch_data import BalancedBatchSampler, WindowDataset
from leads.envs.errors import UserError


def make_cfg(tmp_path, **kw):
    cfg = {
        "dir": str(tmp_path / "data"),
        "seed": 1,
        "n_train": 3,
        "n_val": 2,
        "n_test": 2,
        "n_adapt": 3,
        "n_adapt_val": 1,
        "n_test_heldout": 2,
        "batch_size": 7,
        "window": 4,
    }
    cfg.update(kw)
    return cfg


def make_dm(tmp_path, system=None, custom=None, **kw):
    dm = TrajectoryDataModule(system or LinearDecay(), make_cfg(tmp_path, **kw), custom, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def assert_follows_physics(batch, envs, dt=0.1):
    """Each item decays at its own environment's rates: ties the env index to the physics."""
    rates = torch.tensor([[e["a"], e["b"]] for e in envs], dtype=torch.float64)[batch["env"]]
    states, t = batch["states"].double(), batch["t"].double()
    expected = states[:, :1] * torch.exp(-rates[:, None, :] * (t - t[:, :1])[..., None])
    torch.testing.assert_close(states, expected, rtol=1e-5, atol=0)
    np.testing.assert_allclose(np.diff(t.numpy(), axis=1), dt, rtol=1e-5)


def test_train_batches_are_balanced_and_match_the_file(tmp_path):
    system = LinearDecay()
    dm = make_dm(tmp_path, system)
    data = load_split(dm.paths["train"])
    loader = dm.train_dataloader()
    n_env, per_env = 3, 7 // 3
    items_per_env = 3 * (11 - 4)  # trajectories x window starts
    batches = list(loader)
    assert len(batches) == len(loader) == items_per_env // per_env
    seen = set()
    for batch in batches:
        assert batch["states"].shape == (n_env * per_env, 5, 2) and batch["states"].dtype == torch.float32
        assert Counter(batch["env"].tolist()) == {e: per_env for e in range(n_env)}
        assert_follows_physics(batch, system.train_envs)
        for i in range(len(batch["env"])):
            env, traj = int(batch["env"][i]), int(batch["traj"][i])
            start = int(round(float(batch["t"][i, 0]) / 0.1))
            assert torch.equal(batch["states"][i], data.states[env, traj, start : start + 5])
            seen.add((env, traj, start))
    assert len(seen) == len(batches) * n_env * per_env  # no item twice in an epoch


def test_train_order_is_seeded_and_changes_between_epochs(tmp_path):
    def epoch_envs_trajs(loader):
        return [torch.stack([b["traj"], (b["t"][:, 0] * 10).round().long()]).tolist() for b in loader]

    loader_a = make_dm(tmp_path).train_dataloader()
    loader_b = make_dm(tmp_path).train_dataloader()
    first_a, first_b = epoch_envs_trajs(loader_a), epoch_envs_trajs(loader_b)
    assert first_a == first_b
    assert epoch_envs_trajs(loader_a) != first_a
    loader_a.batch_sampler.set_epoch(0)
    assert epoch_envs_trajs(loader_a) == first_a


def test_whole_trajectory_window_and_small_batches(tmp_path):
    dm = make_dm(tmp_path, window=None, batch_size=2)
    batches = list(dm.train_dataloader())
    # batch_size 2 < 3 environments: still one item of each environment per batch.
    assert len(batches) == 3 and all(b["states"].shape == (3, 11, 2) for b in batches)
    assert all(sorted(b["env"].tolist()) == [0, 1, 2] for b in batches)


def test_val_and_test_serve_every_whole_trajectory_once(tmp_path):
    system = LinearDecay()
    dm = make_dm(tmp_path, system)
    for loader, n_t, n_traj in ((dm.val_dataloader(), 11, 2), (dm.test_dataloader(), 21, 2)):
        pairs = []
        for batch in loader:
            assert batch["states"].shape[1:] == (n_t, 2)
            assert_follows_physics(batch, system.train_envs)
            pairs += list(zip(batch["env"].tolist(), batch["traj"].tolist(), strict=True))
        assert sorted(pairs) == [(e, j) for e in range(3) for j in range(n_traj)]


def test_heldout_loaders_index_envs_within_their_set(tmp_path):
    system = LinearDecay()
    custom = {"user": [{"a": 0.3, "b": 0.4}, {"a": 0.6, "b": 0.9}, {"a": 1.2, "b": 0.1}]}
    dm = make_dm(tmp_path, system, custom)
    sets = {**system.heldout, **custom}
    assert set(dm.heldout_sets) == set(sets)
    for name, envs in sets.items():
        for kind, n_t, n_traj in (("adapt", 11, 3), ("val", 11, 1), ("test", 21, 2)):
            batches = list(dm.heldout_dataloader(name, kind))
            envs_seen = torch.cat([b["env"] for b in batches])
            assert sorted(envs_seen.tolist()) == sorted(list(range(len(envs))) * n_traj)
            for b in batches:
                assert b["states"].shape[1:] == (n_t, 2)
                assert_follows_physics(b, envs)
    one_shot = list(dm.heldout_dataloader("extrap", "adapt", n_traj=1))
    assert [b["traj"].tolist() for b in one_shot] == [[0, 0]]
    with pytest.raises(UserError, match="unknown held-out set"):
        dm.heldout_dataloader("nope", "test")
    with pytest.raises(UserError, match="kind"):
        dm.heldout_dataloader("interp", "train")


def test_loaders_work_without_setup(tmp_path):
    dm = TrajectoryDataModule(LinearDecay(), make_cfg(tmp_path), progress=False)
    assert next(iter(dm.heldout_dataloader("interp", "test")))["states"].shape == (2, 21, 2)


def test_workers_give_the_same_batches(tmp_path):
    reference = [b["states"] for b in make_dm(tmp_path, num_workers=0).train_dataloader()]
    loader = make_dm(tmp_path, num_workers=2).train_dataloader()
    with_workers = [b["states"] for b in loader]
    assert len(with_workers) == len(reference)
    assert all(torch.equal(a, b) for a, b in zip(with_workers, reference, strict=True))


def test_dataset_opens_lazily_and_pickles_without_a_handle(tmp_path):
    path = ensure_split(LinearDecay(grid=3), make_cfg(tmp_path), "train", progress=False)
    ds = WindowDataset(path, window=2)
    assert ds._file is None
    item = ds[len(ds) - 1]
    assert item["states"].shape == (3, 2, 3, 3) and ds._file is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None
    assert torch.equal(clone[len(ds) - 1]["states"], item["states"]) and ds.index(len(ds) - 1) == (2, 2, 8)
    with pytest.raises(IndexError):
        ds[len(ds)]
    ds.close()


def test_windows_read_into_memory_are_those_read_from_the_file(tmp_path, monkeypatch):
    import leads.datasets.torch_data as torch_data

    path = ensure_split(LinearDecay(grid=3), make_cfg(tmp_path), "train", progress=False)
    in_memory = WindowDataset(path, window=2, n_traj=2)
    in_memory[0]  # the split is read on first access: into memory, as it fits
    monkeypatch.setattr(torch_data, "IN_MEMORY_BYTES", 0)
    from_file = WindowDataset(path, window=2, n_traj=2)
    for i in range(len(in_memory)):
        a, b = in_memory[i], from_file[i]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert in_memory._memory is not None and in_memory._memory.shape[1] == 2 and from_file._memory is None
    assert in_memory[0]["states"].untyped_storage().nbytes() == in_memory[0]["states"].nbytes  # not a view


def test_bad_windows_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="data.window=11"):
        TrajectoryDataModule(LinearDecay(), make_cfg(tmp_path, window=11))
    path = ensure_split(LinearDecay(), make_cfg(tmp_path), "val", progress=False)
    with pytest.raises(UserError, match="window"):
        WindowDataset(path, window=11)
    with pytest.raises(UserError, match="holds 2"):
        WindowDataset(path, n_traj=3)


def test_balanced_sampler_without_set_epoch_reshuffles():
    sampler = BalancedBatchSampler(n_env=2, items_per_env=6, per_env=3, seed=0)
    first, second = list(sampler), list(sampler)
    assert first != second
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(12))
        assert all(sum(i < 6 for i in b) == 3 for b in epoch)


def test_lightning_trainer_runs_on_the_datamodule(tmp_path):
    import pytorch_lightning as pl

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.rate = torch.nn.Parameter(torch.zeros(3, 2))

        def _loss(self, batch):
            s, t = batch["states"], batch["t"]
            pred = s[:, :1] * torch.exp(-self.rate[batch["env"]][:, None] * (t - t[:, :1])[..., None])
            return ((pred - s) ** 2).mean()

        def training_step(self, batch, _):
            return self._loss(batch)

        def validation_step(self, batch, _):
            self.log("val", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.1)

    dm = TrajectoryDataModule(LinearDecay(), make_cfg(tmp_path), progress=False)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 2 * len(dm.train_dataloader())
    # Lightning drove the shuffling epoch (without it the sampler would have advanced to 2).
    assert trainer.train_dataloader.batch_sampler.epoch == 1
