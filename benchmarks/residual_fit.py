"""How accurately a hybrid's residual must represent the missing terms, and how accurately its
network does when regressed on them.

    python benchmarks/residual_fit.py --env gray_scott --profile paper_code_cpu \
        --set physics.terms=[diffusion,reaction] --set physics.params=constants_known \
        --set physics.integrator=etdrk4 --set physics.substeps=4 --set model.kernel_size=1 \
        [--set model.width=16 --set model.depth=3] [--steps 2000 8000] [--lr 5e-3]

A hybrid model learns ``du/dt = known(u) + residual_e(u)``; its residual should become the
missing terms (every term of the system not in ``physics.terms``, at the environment's true
parameters: the same code the data were generated with). This separates the two errors of a
trained hybrid:

1. **The floor**: the hybrid's rollout with the residual replaced by the exact missing terms,
   through the configured integrator (float32, as training). No residual can do better.
2. **The residual's form**: a fresh network of the configured model and method, regressed on
   the missing terms at states of training trajectories (Adam, cosine schedule to zero, batches
   of ``--batch`` states, per-environment parameters included), for each of ``--steps``; then
   its relative error on other states and its rollout error. Trajectory training gets at best
   what this direct regression gets, so a rollout error here above a goal says the residual's
   form or its optimisation budget, not the training objective, is what misses it.

Trajectories come from the system's own solver: ``--trajectories`` initial states per training
environment for the regression, as many others for the rollouts, over the test horizon [0, 2T].
Errors are the mean over samples and times of the relative L2 error of each state, over
(0, T], (T, 2T] and (0, 2T]. Writes ``benchmarks/out/residual_fit_<system>.json``.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import table, write_json

from leads.config.loading import load_config, system_of
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.envs.registry import SYSTEMS
from leads.evaluation.metrics import relative_l2_per_step
from leads.models.forecaster import Forecaster


def _errors(pred: torch.Tensor, truth: torch.Tensor, half: int) -> dict[str, float]:
    """Mean relative L2 of each state over (0, T], (T, 2T] and (0, 2T] (``half`` = T in steps)."""
    err = relative_l2_per_step(pred, truth)  # (N, n_t - 1): t = 0 dropped
    return {"(0,T]": float(err[:, :half].mean()), "(T,2T]": float(err[:, half:].mean()), "(0,2T]": float(err.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="gray_scott", choices=sorted(SYSTEMS))
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides, as run.py's --set; physics.terms must name the known terms")
    ap.add_argument("--steps", type=int, nargs="+", default=[2000, 8000], help="regression step budgets")
    ap.add_argument("--lr", type=float, default=5e-3, help="Adam's starting learning rate (cosine to zero)")
    ap.add_argument("--batch", type=int, default=8, help="states per regression step")
    ap.add_argument("--trajectories", type=int, default=4, help="initial states per training environment")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = RunConfig.of(load_config(args.env, args.profile, args.sets))
    system = system_of(cfg)
    known = system.check_terms(cfg.physics.terms)
    missing = tuple(name for name in system.terms if name not in known)
    if not known or not missing or not cfg.physics.residual:
        raise UserError("residual_fit needs known and missing terms and a residual: set physics.terms to some, "
                        "not all, of " + ", ".join(system.terms))
    envs = system.train_envs
    n = args.trajectories
    env_rows = system.env_tensor(envs).repeat_interleave(2 * n, dim=0)
    u0 = system.sample_initial_states(list(range(len(env_rows))))
    t = system.times(2 * system.horizon)
    truth = system.solve(u0, env_rows, t).float()
    index = torch.arange(len(envs)).repeat_interleave(2 * n)
    fit, held = (torch.arange(len(index)) % (2 * n)) < n, (torch.arange(len(index)) % (2 * n)) >= n
    half = (len(t) - 1) // 2
    tt = torch.as_tensor(t, dtype=torch.float32)
    values = system.parameter_values(system.env_tensor(envs))

    def exact(u: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        per_sample = {p: v[env] if isinstance(v, torch.Tensor) else v for p, v in values.items()}
        return system.terms_rhs(missing, 0.0, u, per_sample).to(u.dtype)

    module = Forecaster(cfg, system.state_shape, [str(e) for e in envs])
    module.fit_normalization(truth[fit][:, : half + 1], tt[: half + 1])
    network = module.residual_field
    module.residual_field = exact  # type: ignore[method-assign]
    with torch.no_grad():
        floor = _errors(module(truth[held][:, 0], tt, index[held]), truth[held], half)
    module.residual_field = network  # type: ignore[method-assign]
    rows = [["exact missing terms (the floor)", "—", "—", *(f"{floor[k]:.2e}" for k in floor), "—"]]
    out = [{"residual": "exact", **floor}]

    states = truth[fit][:, : half + 1]  # the training horizon [0, T]
    state_env = index[fit]
    test_states = truth[held][:, : half + 1].flatten(0, 1)
    test_env = index[held].repeat_interleave(half + 1)
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    for steps in args.steps:
        module.model.load_state_dict(initial)
        gen = torch.Generator().manual_seed(args.seed)
        opt = torch.optim.Adam(module.model.parameters(), lr=args.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        start = time.perf_counter()
        for _ in range(steps):
            i = torch.randint(len(states), (args.batch,), generator=gen)
            j = torch.randint(states.shape[1], (args.batch,), generator=gen)
            u, env = states[i, j], state_env[i]
            # In the network's output units, where the trajectory loss's gradients reach it.
            loss = ((module.residual_field(u, env) - exact(u, env)) / module.du_std).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            target = exact(test_states, test_env)
            fitted = module.residual_field(test_states, test_env)
            rel = float((fitted - target).norm() / target.norm())
            errs = _errors(module(truth[held][:, 0], tt, index[held]), truth[held], half)
        rows.append([f"network regressed, {steps} steps", f"{rel:.2e}", f"{seconds:.0f}",
                     *(f"{errs[k]:.2e}" for k in errs), f"{args.lr:g}"])
        out.append({"residual": "regressed", "steps": steps, "lr": args.lr, "residual_rel_l2": rel,
                    "seconds": seconds, **errs})
    print(f"{args.env} ({args.profile}): known {', '.join(known)}; missing {', '.join(missing)}; "
          f"{cfg.physics.integrator} at {cfg.physics.substeps} steps per dt; model {cfg.model.to_dict()}, "
          f"method {cfg.method}; {len(envs)} training environments x {n} rollouts over [0, {2 * system.horizon:g}]")
    print(table(["residual", "its rel. L2 on other states", "fit s", "rollout (0, T]", "(T, 2T]", "(0, 2T]", "lr"],
                rows))
    write_json(f"residual_fit_{args.env}.json", {"system": args.env, "profile": args.profile, "sets": args.sets,
                                                  "results": out})


if __name__ == "__main__":
    main()
