"""Identified physical parameters of new environments, against the truth, and what to trust.

After adaptation each held-out environment's learned physical parameters are compared with its
true ones (:func:`identify`). Two things say which numbers to trust without the truth:

- the fit's standard error of each parameter (``leads.evaluation.identifiability``): a parameter
  the fitted trajectories do not determine to ``DETERMINED`` of its value is reported as not
  determined, never as a number;
- the environment's own validation error: an environment fitted ``POOR_FIT`` times worse than the
  trained model fits its training environments (their validation trajectories), or whose
  validation trajectories it forecasts with a relative error of ``POOR_FIT_ABSOLUTE`` or more, is
  flagged (:func:`poor_fits`); its parameters come from a fit that does not reproduce the data.

:func:`worst` gives the largest error of a set (its environment and parameter), which the
summary, the result rows, W&B and the leaderboard report beside the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from leads.envs.base import Env
from leads.evaluation.identifiability import DETERMINED
from leads.models.forecaster import Forecaster

# An environment whose validation error is this many times the model's on its training
# environments is flagged as poorly fitted (see docs/identification.md for the errors measured)...
POOR_FIT = 10.0
# ... and so is one whose validation error is this large whatever the model does in-domain: a
# model that fits its own training environments badly (the pendulum's forcing frequency in the
# wrong basin) is no reference, and a forecast 10% off over the horizon does not reproduce the data.
POOR_FIT_ABSOLUTE = 0.1


@dataclass(frozen=True)
class Identified:
    """A physical parameter of a new environment: adapted estimate, true value, relative error,
    and the fit's standard error relative to the estimate (nan: not computed; inf: undetermined)."""

    estimate: float
    true: float
    rel_error: float
    rel_std_error: float = math.nan

    @property
    def determined(self) -> bool:
        """Whether the fit determines the parameter (within ``DETERMINED``); True where unknown."""
        return not self.rel_std_error > DETERMINED


def identify(module: Forecaster, envs: list[Env],
             rel_std_errors: Sequence[Sequence[float]] | None = None) -> list[dict[str, Identified]] | None:
    """The learned physical parameters of ``module``'s environments against ``envs``' true ones,
    with each one's relative standard error from the fit when given (``(n_env, n_learned)``);
    None without learned known terms."""
    physics = module.physics
    if physics is None or not physics.learned_names:
        return None
    truth = physics.true_values(envs).double()
    out = []
    for e, est in enumerate(physics.estimates()):
        row = {}
        for i, name in enumerate(physics.names):
            if name not in physics.learned_names:  # known, not identified
                continue
            true = float(truth[e, i])
            err = abs(est[name] - true) / abs(true) if true else abs(est[name])
            se = math.nan if rel_std_errors is None else float(rel_std_errors[e][physics.learned_names.index(name)])
            row[name] = Identified(est[name], true, err, se)
        out.append(row)
    return out


@dataclass(frozen=True)
class Worst:
    """The largest relative error of a set's determined parameters, where it is."""

    rel_error: float
    environment: int  # index in the set
    parameter: str


def worst(identified: Sequence[dict[str, Identified]]) -> Worst | None:
    """The largest relative error over the determined parameters of every environment; None
    where none is determined."""
    cells = [(i.rel_error, e, p) for e, row in enumerate(identified) for p, i in row.items() if i.determined]
    if not cells:
        return None
    err, e, p = max(cells, key=lambda c: (c[0] if math.isfinite(c[0]) else math.inf, -c[1]))
    return Worst(err, e, p)


def poor_fits(val_rel_l2_per_env: Sequence[float], reference: float) -> list[bool]:
    """Per environment, whether its validation error is ``POOR_FIT`` times ``reference`` (the
    model's validation error on its training environments; nan: unknown) or more, at least
    ``POOR_FIT_ABSOLUTE``, or not finite."""
    bound = POOR_FIT_ABSOLUTE
    if math.isfinite(reference):
        # float32 rollouts: relative errors below ~1e-6 are round-off, not a measure of the fit
        bound = min(bound, POOR_FIT * max(reference, 1e-6))
    return [not v < bound for v in val_rel_l2_per_env]
