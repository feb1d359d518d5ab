"""Figures: predicted vs true rollouts per environment, and error against time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from leads.datasets.atomic import atomic_write


def rollout_figure(pred: np.ndarray, true: np.ndarray, t: np.ndarray, env_names: list[str],
                   state_names: list[str], n_frames: int = 6) -> Figure:
    """One trajectory per environment: ``pred``/``true`` are ``(n_env, n_t, *state)``.
    2D fields get image strips (truth above prediction, first channel); 1D fields space-time
    images (truth beside prediction, first channel); ODEs get phase portraits."""
    n_env = len(env_names)
    if pred.ndim == 4:
        fig = Figure(figsize=(6.0, 1.8 * n_env + 0.6))
        axes = fig.subplots(n_env, 2, squeeze=False)
        extent = (float(t[0]), float(t[-1]), 0.0, 1.0)
        for e in range(n_env):
            lo, hi = true[e, :, 0].min(), true[e, :, 0].max()
            for col, data, label in ((0, true, "true"), (1, pred, "pred")):
                ax = axes[e, col]
                ax.imshow(data[e, :, 0].T, vmin=lo, vmax=hi, cmap="viridis", aspect="auto", origin="lower",
                          extent=extent)
                ax.set_title(f"{label}  {env_names[e]}", fontsize=6)
                ax.set_ylabel("x / L", fontsize=6)
                ax.tick_params(labelsize=6)
            axes[e, 1].set_yticks([])
        for ax in axes[-1]:
            ax.set_xlabel("t", fontsize=7)
        fig.suptitle(f"{state_names[0]}(x, t): truth beside prediction", fontsize=9)
    elif pred.ndim >= 5:
        frames = np.linspace(0, len(t) - 1, min(n_frames, len(t))).round().astype(int)
        fig = Figure(figsize=(1.6 * len(frames), 3.3 * n_env))
        axes = fig.subplots(2 * n_env, len(frames), squeeze=False)
        for e in range(n_env):
            lo, hi = true[e, :, 0].min(), true[e, :, 0].max()
            for j, f in enumerate(frames):
                for row, data, label in ((2 * e, true, "true"), (2 * e + 1, pred, "pred")):
                    ax = axes[row, j]
                    ax.imshow(data[e, f, 0], vmin=lo, vmax=hi, cmap="viridis")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if row == 0:
                        ax.set_title(f"t={t[f]:g}", fontsize=8)
                    if j == 0:
                        ax.set_ylabel(f"{label}\n{env_names[e]}", fontsize=6)
        fig.suptitle(f"{state_names[0]}: truth above prediction", fontsize=9)
    else:
        cols = min(n_env, 5)
        rows = (n_env + cols - 1) // cols
        fig = Figure(figsize=(2.6 * cols, 2.4 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        for e in range(rows * cols):
            ax = axes[e // cols, e % cols]
            if e >= n_env:
                ax.axis("off")
                continue
            ax.plot(true[e, :, 0], true[e, :, 1], "k-", lw=1, label="true")
            ax.plot(pred[e, :, 0], pred[e, :, 1], "r--", lw=1, label="pred")
            ax.set_title(env_names[e], fontsize=7)
            ax.set_xlabel(state_names[0], fontsize=7)
            ax.set_ylabel(state_names[1], fontsize=7)
            ax.tick_params(labelsize=6)
        axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def error_curve_figure(t: np.ndarray, curves: dict[str, np.ndarray], train_horizon: float | None = None,
                       title: str = "relative L2 error vs time") -> Figure:
    """``curves`` maps a label to the error at ``t[1:]`` (mean over trajectories)."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for label, err in curves.items():
        ax.semilogy(t[1:], err, label=label, lw=1)
    if train_horizon is not None:
        ax.axvline(train_horizon, color="gray", ls=":", lw=1, label="training horizon")
    ax.set_xlabel("t")
    ax.set_ylabel("relative L2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def compute_curve_figure(curves: dict[str, list[list[dict]]], test_metric: str,
                         published: dict[str, float] | None = None, title: str = "") -> Figure:
    """Accuracy against compute: validation and test error against steps and training seconds.

    The seconds are CPU seconds where every entry has them (a run's own clock: runs sharing
    cores, or started at a low priority, are compared fairly), wall seconds otherwise.

    Args:
        curves: method -> one ``curve.jsonl`` list per seed (``leads.training.curves``).
        test_metric: the test metric drawn (a key of the entries' ``test``), e.g. ``rel_l2_full``.
        published: label -> published value in ``test_metric``, drawn as horizontal lines.
        title: the figure's title.
    """
    fig = Figure(figsize=(9, 6))
    axes = fig.subplots(2, 2, squeeze=False)
    colors = [f"C{i}" for i in range(10)]
    any_test = False
    every_entry = (e for seeds in curves.values() for entries in seeds for e in entries)
    clock = "cpu_seconds" if all("cpu_seconds" in e for e in every_entry) else "seconds"
    for i, (method, seeds) in enumerate(sorted(curves.items())):
        for j, entries in enumerate(seeds):
            steps = [e["step"] for e in entries]
            seconds = [e[clock] for e in entries]
            val = [e.get("val_rel_l2") for e in entries]
            test = [e.get("test", {}).get(test_metric) for e in entries]
            label = method if j == 0 else None
            for col, x in enumerate((steps, seconds)):
                axes[0, col].semilogy(x, val, color=colors[i % 10], lw=1, marker=".", label=label)
                if any(v is not None for v in test):
                    any_test = True
                    axes[1, col].semilogy(x, test, color=colors[i % 10], lw=1, marker=".", label=label)
    for k, (label, value) in enumerate(sorted((published or {}).items())):
        for col in (0, 1):
            axes[1, col].axhline(value, color=colors[(k + 5) % 10], ls="--", lw=1, label=f"{label} (published)")
    seconds_label = "training CPU seconds" if clock == "cpu_seconds" else "training seconds (wall)"
    for col, xlabel in enumerate(("training steps", seconds_label)):
        if not any_test:  # only the published lines: on the scale of the numbers, saying why
            axes[1, col].set_yscale("log")
            axes[1, col].text(0.5, 0.5, "no test scores: runs trained without --test-curve", fontsize=7,
                              ha="center", va="center", transform=axes[1, col].transAxes)
        axes[0, col].set_ylabel("validation relative L2 (0, T]", fontsize=7)
        axes[1, col].set_ylabel(f"test {test_metric}", fontsize=7)
        for row in (0, 1):
            axes[row, col].set_xlabel(xlabel, fontsize=7)
            axes[row, col].tick_params(labelsize=6)
            if axes[row, col].get_legend_handles_labels()[0]:
                axes[row, col].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG, atomically. Figures are plain ``Figure`` objects, never pyplot's, so
    no backend is chosen and nothing is left open."""
    with atomic_write(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
