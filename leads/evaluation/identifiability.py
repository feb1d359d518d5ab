"""How well the trajectories fitted determine each identified physical parameter.

Adaptation fits an environment's parameters to its few trajectories. Whether a parameter is
then *determined* is a property of the fit, not of the truth: where two parameters enter the
equations only through their product (or the trajectory is too short to tell them apart), the
fitted trajectory stays the same along a direction of parameter space and the number adaptation
returns for either one is arbitrary. This is read from the Gauss-Newton matrix ``J^T J`` of the
environment's residuals at the adapted parameters, the usual local analysis of nonlinear least
squares: the covariance of the estimates is ``s^2 (J^T J)^{-1}`` with ``s^2`` the residual sum
of squares over its degrees of freedom, and a parameter's standard error relative to its value
says how far it could move with the fit as good as it is. Directions whose eigenvalue is below
``RCOND`` times the largest are not seen by the data at all (their standard error is infinite).

``J`` is computed in float64 (a copy of the model), so that an exact null direction is told
apart from float32 round-off. The matrix covers every parameter of the environment that has one
row per environment (a context next to the physical ones: a context that can take a parameter's
part over makes it undetermined), or the physical parameters alone for methods that adapt
weight tensors (their weights held: an optimistic bound).
"""

from __future__ import annotations

import copy
import math

import torch

from leads.evaluation.gauss_newton import LevenbergMarquardt
from leads.models.forecaster import Forecaster

# Eigenvalues of J^T J below this fraction of the largest are directions the data do not
# determine: with a float64 Jacobian of a float64 rollout, an exact null direction (two
# parameters entering as a product) sits at ~1e-30 and the weakest determined one of the
# systems here far above 1e-12.
RCOND = 1.0e-12
# A parameter is reported as identified when its standard error is at most this fraction of
# its value: the tolerance the identification benchmarks claim.
DETERMINED = 1.0e-2


def relative_standard_errors(module: Forecaster, x: torch.Tensor, t: torch.Tensor, env: torch.Tensor,
                             n_env: int) -> torch.Tensor | None:
    """``(n_env, n_learned)`` standard error of each learned physical parameter of each of
    ``module``'s environments relative to its value (inf where the data do not determine it), for
    a fit to the trajectories ``x`` (``(n, n_t, *state)``, environments ``env``); None without
    learned physical parameters."""
    if module.physics is None or not module.physics.learned_names:
        return None
    double = copy.deepcopy(module).double()
    for p in double.parameters():
        p.requires_grad_(False)
    stacked = [p for p in double.env_parameters() if p.dim() > 0 and p.shape[0] == n_env]
    theta = double.physics.theta
    params = stacked if len(stacked) == len(double.env_parameters()) else [theta]
    offset = 0
    for p in params:
        if p is theta:
            break
        offset += p[0].numel()
    fit = LevenbergMarquardt(double, params, x.double(), t.double(), env, n_env)
    with torch.enable_grad():  # jvp needs no graph, but the module's buffers may ask for one
        jtj, rss, count = fit.least_squares()
    n_params = jtj.shape[-1]
    # an environment whose fit is not finite has no standard errors (nan), not a failed analysis
    broken = ~(torch.isfinite(jtj).all(-1).all(-1) & torch.isfinite(rss))
    jtj = torch.where(broken[:, None, None], torch.eye(n_params, dtype=jtj.dtype, device=jtj.device), jtj)
    variance = rss / (count - n_params).clamp_min(1.0)                                 # (n_env,)
    eigenvalues, vectors = torch.linalg.eigh(jtj)                                       # ascending
    largest = eigenvalues[:, -1:].clamp_min(torch.finfo(torch.float64).tiny)
    seen = eigenvalues > RCOND * largest
    inverse = torch.where(seen, 1.0 / eigenvalues.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    diag = torch.einsum("eik,ek->ei", vectors.square(), inverse)                        # (n_env, P)
    # a parameter with a share in a direction the data do not see is undetermined
    unseen = torch.einsum("eik,ek->ei", vectors.square(), (~seen).double()) > math.sqrt(RCOND)
    std = (variance.unsqueeze(1) * diag).sqrt().masked_fill(unseen, math.inf).masked_fill(broken[:, None], math.nan)
    cols = slice(offset, offset + theta.shape[1])
    return (std[:, cols] / theta.detach().abs().clamp_min(torch.finfo(torch.float64).tiny)).float().cpu()
