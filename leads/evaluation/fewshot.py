"""Few-shot curve: held-out error against the number k of adaptation trajectories per environment."""

from __future__ import annotations

from matplotlib.figure import Figure

from leads.config.schema import RunConfig
from leads.envs.base import Env
from leads.evaluation.heldout import SetResult, evaluate_heldout
from leads.models.forecaster import Forecaster

SHOTS = (1, 2, 4, 8)


def shot_counts(n_adapt: int, shots: tuple[int, ...] = SHOTS) -> list[int]:
    """``shots`` capped at the ``n_adapt`` adaptation trajectories there are."""
    return sorted({min(k, n_adapt) for k in shots if n_adapt >= 1})


def few_shot_curve(module: Forecaster, cfg: RunConfig, sets: dict[str, list[Env]],
                   known: dict[str, SetResult] | None = None) -> dict[str, dict[int, SetResult]]:
    """``{set: {k: result}}`` for every k of :func:`shot_counts`; results in ``known`` (adapted
    with as many shots as asked) are reused rather than recomputed."""
    known = known or {}
    curve: dict[str, dict[int, SetResult]] = {}
    for name, envs in sets.items():
        curve[name] = {}
        for k in shot_counts(cfg.data.n_adapt):
            done = known.get(name)
            if done is not None and done.adapted.shots == k:
                curve[name][k] = done
            else:
                curve[name][k] = evaluate_heldout(module, cfg, name, envs, shots=k, keep_test=False)
    return curve


def few_shot_figure(curve: dict[str, dict[int, SetResult]], title: str = "") -> Figure:
    """Mean relative L2 on (0, T] against k, with the spread over test trajectories."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    for name, by_k in curve.items():
        ks = sorted(by_k)
        mean = [by_k[k].scores.summary("rel_l2")[0] for k in ks]
        std = [by_k[k].scores.summary("rel_l2")[1] for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, lw=1, label=name)
    ax.set_xscale("log", base=2)
    ks = sorted({k for by_k in curve.values() for k in by_k})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("adaptation trajectories per environment (k)")
    ax.set_ylabel("held-out relative L2 (0, T]")
    ax.set_title(title or "few-shot adaptation", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
