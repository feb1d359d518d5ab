"""Published numbers of LEADS, CoDA and GEPS (from docs/protocols.md), with their protocols.

A leaderboard shows an entry only beside rows that followed the same protocol: a profile the
entry names in ``settings`` (each with the setting it stands for: where a paper's text and its
public code disagree, ``paper`` follows the text and ``paper_code`` the code, and the block says
which one the rows are), the same training environments, observation step and horizon,
the same number of adaptation trajectories and (for numbers on new environments) a held-out
set with exactly the published adaptation environments. Each entry names the metric of ours
that computes the same quantity, so the comparison is like for like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leads.envs.base import Env, envs_key
from leads.envs.registry import get_system

if TYPE_CHECKING:
    from leads.config.schema import RunConfig

Number = tuple[float, float | None]  # mean, std (None where not published)


def _grid(a: str, xs: tuple[float, ...], b: str, ys: tuple[float, ...]) -> tuple[Env, ...]:
    return tuple({a: x, b: y} for x in xs for y in ys)


@dataclass(frozen=True)
class Published:
    system: str
    protocol: str                     # short label of the protocol
    source: str                       # where the numbers come from
    train_envs: tuple[Env, ...]
    heldout_envs: tuple[Env, ...] | None  # the published adaptation environments; None: in-domain only
    dt: float
    horizon: float                    # training horizon T
    metric: str                       # our metric that computes the published quantity
    scale: float                      # published numbers are in units of this
    numbers: dict[str, tuple[Number | None, Number | None]]  # method -> (in-domain, new environments)
    shots: int | None = 1             # adaptation trajectories per new environment
    note: str = ""
    profile: str | None = field(default="paper")  # the config profile that follows it; None: none does
    # Every profile whose rows it is shown beside -> the setting that profile reproduces. Default:
    # ``profile`` alone, described as the published protocol.
    settings: dict[str, str] = field(default_factory=dict)
    also_metric: str | None = None    # a second metric of ours to show beside it (e.g. without t=0)

    def __post_init__(self) -> None:
        if self.profile is not None and not self.settings:
            object.__setattr__(self, "settings", {self.profile: "the published protocol"})

    def train_key(self) -> str:
        return envs_key(get_system(self.system), list(self.train_envs))

    def heldout_key(self) -> str | None:
        return None if self.heldout_envs is None else envs_key(get_system(self.system), list(self.heldout_envs))


_PENDULUM_KEYS = ("alpha", "omega0", "omega_f", "F")

PUBLISHED: list[Published] = [
    Published(
        system="gray_scott", protocol="GEPS", source="Kassaï Koupaï et al., GEPS, NeurIPS 2024, Table 2",
        train_envs=_grid("F", (0.030, 0.039), "k", (0.058, 0.062)),
        heldout_envs=_grid("F", (0.033, 0.042), "k", (0.057, 0.060)),
        dt=10.0, horizon=200.0, metric="rel_l2_full", scale=1e-2,
        numbers={"GEPS": ((2.22, 0.18), (1.86, 2.11)), "CoDA": ((3.19, 0.07), (2.89, 4.03)),
                 "LEADS": ((3.11, 0.25), (3.81, 0.77)), "CAVIA": ((1.63, 3.82), (23.1, 6.86)),
                 "FOCA": ((1.71, 5.10), (14.5, 3.34)), "APHYNITY": ((0.14, None), (0.20, None)),
                 "GEPS-Phy": ((0.67, None), (0.83, None))},
        note="relative L2 over the whole test trajectory [0, 2T]",
        profile="paper_code",
        settings={"paper_code": "the setting of GEPS' public code, 256 training trajectories per environment "
                                "(where the published numbers most likely come from)",
                  "paper_code_cpu": "the setting of GEPS' public code (256 training trajectories per "
                                    "environment), our CPU recipe: 45,000 compiled steps stopped before one CPU "
                                    "hour of training, contexts by Levenberg-Marquardt",
                  "paper": "the GEPS paper's text, 1 training trajectory per environment (its public code "
                           "trains on 256)",
                  "paper_cpu": "the GEPS paper's text (1 training trajectory per environment), trained with "
                               "our CPU recipe",
                  "paper_code_cpu_hybrid": "the setting of GEPS' public code (256 training trajectories per "
                                           "environment), incomplete physics as GEPS-Phy, our CPU recipe with a "
                                           "linear residual"},
    ),
    Published(
        system="pendulum", protocol="GEPS", source="Kassaï Koupaï et al., GEPS, NeurIPS 2024",
        train_envs=tuple(dict(zip(_PENDULUM_KEYS, r)) for r in
                         ((0.2, 0.5, 0.0, 0.0), (0.5, 0.5, 0.0, 0.0), (0.0, 0.7, 0.75, 0.2), (0.0, 0.5, 1.0, 0.1))),
        heldout_envs=tuple(dict(zip(_PENDULUM_KEYS, r)) for r in
                           ((0.5, 1.0, 0.3, 0.2), (0.5, 0.75, 0.7, 0.1), (0.1, 1.0, 1.0, 0.15), (0.1, 0.5, 0.5, 0.05))),
        dt=0.5, horizon=25.0, metric="rel_l2_full", scale=1e-2,
        numbers={"LEADS": ((20.8, 1.01), (51.1, 3.47)), "CAVIA": ((56.8, None), (91.8, None)),
                 "FOCA": ((41.0, None), (91.4, None)), "CoDA": ((21.7, 1.08), (66.2, 3.17)),
                 "GEPS": ((20.8, 0.10), (50.8, 3.90)), "APHYNITY": ((67.2, None), (69.0, None)),
                 "Phys-Ad": ((64.4, None), (58.4, None)), "GEPS-Phy": ((8.04, 0.81), (46.0, 3.64))},
        note="relative L2 over the test trajectory on [0, 50] = [0, 2T]",
        settings={"paper": "the published protocol",
                  "paper_cpu": "the published protocol, our CPU recipe stopped before one CPU hour",
                  "paper_cpu_hybrid": "the published protocol, incomplete physics as GEPS-Phy (no friction term), "
                                      "our CPU recipe with a linear residual"},
    ),
    Published(
        system="burgers", protocol="GEPS", source="Kassaï Koupaï et al., GEPS, NeurIPS 2024, Table 2",
        # the code's six training environments are these three, each twice (docs/protocols.md)
        train_envs=tuple({"mu": mu, "F": 0.0, "w": 1.5} for mu in (0.5, 0.05, 5e-4)),
        heldout_envs=tuple({"mu": mu, "F": 5.0, "w": w} for w in (1.5, 3.0) for mu in (1.0, 5e-5)),
        dt=1e-3, horizon=0.05, metric="rel_l2_full", scale=1e-3,
        numbers={"GEPS": ((2.59, 0.02), (52.9, 5.87)), "CoDA": ((4.98, 0.19), (74.5, 6.15)),
                 "LEADS": ((6.31, 0.52), (64.1, 2.65)), "CAVIA": ((15.5, 1.06), (225.0, 7.94)),
                 "FOCA": ((92.2, 8.21), (157.0, 23.6)), "APHYNITY": ((31.9, 0.08), (307.0, 1.40)),
                 "Phys-Ad": ((15.1, 0.10), (89.9, 8.65)), "GEPS-Phy": ((5.43, 0.35), (68.1, 3.75))},
        note="relative L2 over the test trajectory [0, 0.1] (the span of the table is not stated)",
        profile="paper_code",
        settings={"paper_code": "the setting of GEPS' public code (its 'periodic' training forcing is never "
                                "applied there, so its training environments are unforced, 4 trajectories each)",
                  "paper_code_cpu": "the setting of GEPS' public code (unforced training environments, 4 "
                                    "trajectories each), our CPU recipe stopped before one CPU hour",
                  "paper_code_cpu_hybrid": "the setting of GEPS' public code (unforced training environments, 4 "
                                           "trajectories each), incomplete physics as GEPS-Phy (advection and "
                                           "viscosity known, the forcing learned), our CPU recipe"},
    ),
    Published(
        system="kolmogorov", protocol="GEPS", source="Kassaï Koupaï et al., GEPS, NeurIPS 2024, Table 2",
        train_envs=tuple({"nu": nu, "domain": d, "F": f} for nu in (1e-3, 1e-4) for d in (0.75, 1.0)
                         for f in (0.0, 1.0)),
        # New environments: its adaptation data's viscosity and domain (nu = 5e-4, domain 1.25), unforced and
        # with our forcing. Its data there use two other forcings (F exp(-4 y^2), F (sin 4x + cos 4t)), not
        # in our system, and the parameter table it returns says nu = 1e-5 on domains 1.5 and 2: its
        # new-environment numbers are on other forcings than ours (docs/protocols.md).
        heldout_envs=tuple({"nu": 5e-4, "domain": 1.25, "F": f} for f in (0.0, 1.0)),
        dt=0.05, horizon=1.0, metric="rel_l2_full", scale=1e-1, shots=16,
        numbers={"LEADS": ((5.61, 0.37), (9.18, 0.14)), "CAVIA": ((6.19, 0.02), (8.48, 0.16)),
                 "FOCA": ((6.30, 0.02), (9.18, 0.14)), "CoDA": ((4.02, 0.57), (6.34, 1.11)),
                 "GEPS": ((2.94, 0.04), (5.10, 0.11)), "GEPS-Phy": ((2.78, 0.03), (4.47, 0.17))},
        note="relative L2 over the test trajectory (GEPS: 40 states after the warm-up, [0, 1.95]; ours [0, 2]); "
             "APHYNITY and Phys-Ad diverged there; new environments: its adaptation data's nu and domain, "
             "with other forcings than its (16 trajectories each, as its code)",
        profile="paper_code",
        settings={"paper_code": "the setting of GEPS' public code (512^2 solves observed on 64^2, 16 training "
                                "trajectories per environment; new environments with our forcings)",
                  "paper_code_cpu": "the setting of GEPS' public code on 256^2 solves (5% from 512^2 at nu = 1e-4), "
                                    "our CPU recipe stopped before one CPU hour; new environments with our forcings",
                  "paper_code_cpu_hybrid": "the setting of GEPS' public code on 256^2 solves, incomplete physics as "
                                           "GEPS-Phy (advection and viscosity known, forcing and drag learned), our "
                                           "CPU recipe; new environments with our forcings"},
    ),
    Published(
        system="lotka_volterra", protocol="LEADS", source="Yin et al., LEADS, NeurIPS 2021 (README of the code)",
        train_envs=_grid("alpha", (0.5,), "gamma", (0.5,)) + (
            {"alpha": 0.25, "gamma": 0.5}, {"alpha": 0.75, "gamma": 0.5}, {"alpha": 1.0, "gamma": 0.5},
            {"alpha": 0.5, "gamma": 0.25}, {"alpha": 0.5, "gamma": 0.75}, {"alpha": 0.5, "gamma": 1.0},
            {"alpha": 0.25, "gamma": 0.25}, {"alpha": 0.75, "gamma": 0.75}, {"alpha": 1.0, "gamma": 1.0}),
        heldout_envs=None, dt=0.5, horizon=9.5, metric="mse_t0", scale=1e-3, shots=None,
        numbers={"LEADS": ((1.16, 0.99), None)},
        note="test MSE including t=0; their ± is over test batches",
        profile="paper_leads", also_metric="mse",
        settings={"paper_leads": "the published protocol",
                  "paper_leads_cpu": "the published protocol; our CPU recipe, networks in the per-capita form "
                                     "f(u) = u * net(u) (LEADS' network is a plain MLP)"},
    ),
    Published(
        system="gray_scott", protocol="LEADS", source="Yin et al., LEADS, NeurIPS 2021 (README of the code)",
        train_envs=({"F": 0.037, "k": 0.060}, {"F": 0.030, "k": 0.062}, {"F": 0.039, "k": 0.058}),
        heldout_envs=None, dt=40.0, horizon=400.0, metric="mse_t0", scale=1e-3, shots=None,
        numbers={"LEADS": ((2.08, 2.88), None)},
        note="test MSE including t=0; optimistic: their train and test caches overlap",
        profile=None,  # not reproduced: train/test overlap makes the number meaningless to match
    ),
]


def published_for(system: str) -> list[Published]:
    return [p for p in PUBLISHED if p.system == system]


def published_protocol_of(cfg: RunConfig) -> Published | None:
    """The published entry whose protocol ``cfg`` follows (its data and environments: a profile
    of the entry's settings, ``--set`` overrides included), if any."""
    from leads.reporting.keys import profile_protocol_key, protocol_key

    system, key = cfg.system_name, protocol_key(cfg)
    for entry in published_for(system):
        if any(profile_protocol_key(system, p) == key for p in entry.settings):
            return entry
    return None


def headline_metric(cfg: Mapping[str, Any]) -> tuple[str, str] | None:
    """The metric of the published protocol ``cfg`` follows, as its published block shows it:
    ``(metric key, "GEPS metric: relative L2 over (0, 2T], ...")``; None without one."""
    from leads.evaluation.scoring import METRICS

    entry = published_protocol_of(cfg)
    if entry is None:
        return None
    return entry.metric, f"{entry.protocol} metric: {METRICS[entry.metric]}"
