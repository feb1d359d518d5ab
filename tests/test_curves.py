"""Learning curves: one entry per validation, test scores that never change what is trained."""

from __future__ import annotations

import json

import torch
from tiny import tiny_config

from leads.evaluation.scoring import score
from leads.training.curves import CURVE_FILE, read_curve
from leads.training.train import _test_split, train


def test_curve_has_every_validation_and_test_scoring_changes_nothing(tmp_path):
    cfg = tiny_config("lotka_volterra", tmp_path, "train.max_steps=6", "train.val_every=2")
    plain = train(cfg, progress=False)
    traced = train(cfg, progress=False, test_curve=True)
    assert [e["step"] for e in read_curve(plain.run_dir)] == [2, 4, 6]
    curve = read_curve(traced.run_dir)
    assert [e["step"] for e in curve] == [2, 4, 6]
    assert all("test" not in e for e in read_curve(plain.run_dir))
    # Training is the same with and without test scoring: same weights, same validation errors.
    for a, b in zip(plain.module.state_dict().values(), traced.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [e["val_rel_l2"] for e in curve] == [e["val_rel_l2"] for e in read_curve(plain.run_dir)]
    assert all(e["seconds"] > 0 for e in curve) and curve[-1]["seconds"] >= curve[0]["seconds"]
    assert all(e["cpu_seconds"] > 0 for e in curve) and curve[-1]["cpu_seconds"] >= curve[0]["cpu_seconds"]
    # The last entry's test score is the final model's score on the test split.
    last = torch.load(traced.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    traced.module.load_state_dict(last["state_dict"])
    states, t, horizon = _test_split(traced.module.cfg)
    expected = score(traced.module, states, t, horizon).summary("rel_l2")[0]
    assert abs(curve[-1]["test"]["rel_l2"] - expected) <= 1e-6 * max(expected, 1e-12)


def test_read_curve_keeps_the_later_entry_of_a_repeated_step_and_skips_a_cut_line(tmp_path):
    lines = [{"step": 2, "seconds": 1.0, "val_rel_l2": 0.5}, {"step": 4, "seconds": 2.0, "val_rel_l2": 0.4},
             {"step": 4, "seconds": 2.5, "val_rel_l2": 0.3}]  # step 4 again: a resumed run
    (tmp_path / CURVE_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 6, "sec')
    assert read_curve(tmp_path) == [lines[0], lines[2]]
    assert read_curve(tmp_path / "missing") == []


def test_compute_curve_figure_draws_every_seed_and_the_published_lines():
    from leads.reporting.plots import compute_curve_figure

    seed = [{"step": s, "seconds": 2.0 * s, "val_rel_l2": 1.0 / s, "test": {"rel_l2_full": 2.0 / s}} for s in (1, 2, 4)]
    fig = compute_curve_figure({"lowrank": [seed, seed], "coda": [seed[:2]]}, "rel_l2_full", {"GEPS": 0.02})
    (val_steps, val_seconds), (test_steps, test_seconds) = fig.axes[:2], fig.axes[2:]
    assert len(val_steps.lines) == 3 and len(test_steps.lines) == 4  # 3 seed curves, + 1 published line
    # methods in name order: coda's one seed, then lowrank's two
    assert list(val_seconds.lines[0].get_xdata()) == [2.0, 4.0] and list(val_seconds.lines[1].get_xdata()) == [2, 4, 8]
    assert list(test_steps.lines[2].get_ydata()) == [2.0, 1.0, 0.5]
    published = [ln for ln in test_seconds.lines if ln.get_label() == "GEPS (published)"]
    assert len(published) == 1 and list(published[0].get_ydata()) == [0.02, 0.02]
    assert not [t for ax in fig.axes for t in ax.texts]  # test scores drawn: no note


def test_compute_curve_figure_draws_cpu_seconds_where_every_entry_has_them():
    from leads.reporting.plots import compute_curve_figure

    timed = [{"step": s, "seconds": 10.0 * s, "cpu_seconds": 3.0 * s, "val_rel_l2": 1.0 / s} for s in (1, 2)]
    fig = compute_curve_figure({"lowrank": [timed]}, "rel_l2_full")
    assert list(fig.axes[1].lines[0].get_xdata()) == [3.0, 6.0]
    assert fig.axes[1].get_xlabel() == "training CPU seconds"
    older = [{"step": 4, "seconds": 40.0, "val_rel_l2": 0.25}]  # a curve written before CPU seconds were
    fig = compute_curve_figure({"lowrank": [timed], "coda": [older]}, "rel_l2_full")
    assert list(fig.axes[1].lines[0].get_xdata()) == [40.0]  # coda first: wall seconds for every run
    assert fig.axes[1].get_xlabel() == "training seconds (wall)"


def test_compute_curve_figure_without_test_scores_says_so_on_a_log_scale():
    from leads.reporting.plots import compute_curve_figure

    seed = [{"step": s, "seconds": 2.0 * s, "val_rel_l2": 1.0 / s} for s in (1, 2, 4)]
    fig = compute_curve_figure({"lowrank": [seed]}, "mse_t0", {"LEADS": 1.16e-3})
    for test in fig.axes[2:]:
        assert [ln.get_label() for ln in test.lines] == ["LEADS (published)"] and test.get_yscale() == "log"
        assert "--test-curve" in test.texts[0].get_text()


def test_the_clock_counts_cpu_seconds_apart_from_wall_seconds():
    import time

    from leads.training.checkpoints import TrainClock

    clock = TrainClock()
    clock.on_train_start(None, None)
    time.sleep(0.3)  # wall time, no CPU
    assert clock.seconds() >= 0.3 and clock.cpu_seconds() < 0.15
    end = time.process_time() + 0.3
    while time.process_time() < end:  # CPU time
        pass
    assert clock.cpu_seconds() >= 0.3
    resumed = TrainClock()
    resumed.load_state_dict(clock.state_dict())
    assert resumed.cpu_seconds() >= 0.3 and resumed.seconds() >= 0.6
