"""Systems from their written equations (leads.envs.equations): grammar, operators, solvers,
terms and their gradients, the shipped system files, and every bad input as a one-line error."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import leads
from leads.config.loading import load_config, system_name, system_of
from leads.envs.equations import load_system, system_from_config
from leads.envs.equations.operators import Discretization, Grid
from leads.envs.errors import UserError
from leads.envs.registry import get_system
from leads.models.physics import PhysicsPart

SYSTEMS_DIR = Path(__file__).resolve().parents[1] / "systems"
SHIPPED = sorted(SYSTEMS_DIR.glob("*.yaml"))

# A small reaction-diffusion system: every bad-input case below is one change to it.
BASE: dict[str, Any] = {
    "name": "small",
    "fields": ["u", "v"],
    "grid": {"dims": 2, "size": 8, "length": 8.0},
    "constants": {"D": 0.1},
    "parameters": {"F": {"default": 0.03, "min": 0.0}, "k": None},
    "train_envs": [{"k": 0.06}, {"F": 0.04, "k": 0.05}],
    "heldout": {"interp": [{"k": 0.055}]},
    "dt": 1.0,
    "horizon": 4.0,
    "initial_state": {"kind": "random_field", "mean": {"u": 0.5, "v": 0.25}, "std": {"u": 0.1, "v": 0.1},
                      "modes": 2},
    "equations": {"u": {"diffusion": "D*laplacian(u)", "reaction": "-u*v**2", "feed": "F*(1 - u)"},
                  "v": {"diffusion": "D*laplacian(v)/2", "reaction": "u*v**2", "kill": "-(F + k)*v"}},
    "solver": {"method": "dopri5", "rtol": 1e-8, "atol": 1e-8},
}


def _write(tmp_path: Path, data: dict[str, Any] | str, name: str = "small.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _changed(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return data


_DELETE = object()


# ------------------------------------------------------------------------------ the shipped files
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_file_round_trips_through_its_run_config(path, tmp_path):
    system = load_system(path)
    # The run config's system section rebuilds the same system, also after a YAML round trip
    # (what a saved run or checkpoint holds), and --env with the path finds its run settings.
    cfg = load_config(str(path))
    assert cfg.system_name == system.name == system_name(str(path))
    again = system_of(cfg)
    dumped = yaml.safe_load(yaml.safe_dump(cfg.to_dict()["system"], sort_keys=False))
    third = get_system(system.name, **dumped)
    for other in (again, third):
        assert other.config == system.config and other.terms == system.terms
        assert other.param_names == system.param_names and other.state_names == system.state_names
    seeds = [3, 4]
    params = system.env_tensor(system.train_envs[:2])
    t = system.times(2 * system.dt)
    assert torch.equal(system.generate(seeds, params, t), third.generate(seeds, params, t))
    # A second load of the file is the same class (parsed once per process); pickling and
    # copying rebuild it from its config.
    assert type(load_system(path)) is type(system)
    for copied in (pickle.loads(pickle.dumps(system)), copy.deepcopy(system)):
        assert copied.config == system.config and type(copied).__name__ == type(system).__name__


def test_system_text_and_overrides_through_the_public_api():
    text = yaml.safe_dump(BASE, sort_keys=False)
    system = leads.load_system(text, dt=0.5)
    assert system.name == "small" and system.dt == 0.5 and system.state_shape == (2, 8, 8)
    assert system.terms == {"diffusion": ("D",), "reaction": (), "feed": ("F",), "kill": ("F", "k")}
    assert system.complete_env({"k": 0.06}) == {"F": 0.03, "k": 0.06}
    assert "u_t = [diffusion: D*laplacian(u)]" in system.describe_equations()


def test_data_files_store_the_equations_and_the_cache_hash_covers_them(tmp_path):
    from leads.datasets.cache import ensure_split
    from leads.datasets.h5 import load_split

    path = _write(tmp_path, BASE)
    data = {"dir": str(tmp_path / "data"), "n_train": 1, "n_val": 1, "n_test": 1}
    first = ensure_split(load_system(path), data, "train")
    attrs = load_split(first).attrs
    assert attrs["equations"] == load_system(path).describe_equations()
    assert "dopri5" in attrs["solver"] and "laplacian: central" in attrs["solver"]
    assert '"equations"' in attrs["config_json"]
    # Editing one term writes a new cache directory; the old file stays as it was.
    edited = _write(tmp_path, _changed(**{"equations.u.feed": "F*(1 - u) + 0*u"}))
    second = ensure_split(load_system(edited), data, "train")
    assert second.parent != first.parent and first.exists()


# ------------------------------------------------------------------------------ grammar
@pytest.mark.parametrize("text, value", [
    ("2*u + 1", lambda u, v: 2 * u + 1),
    ("u**2 - v/2", lambda u, v: u**2 - v / 2),
    ("-(u - v)**3", lambda u, v: -((u - v) ** 3)),
    ("exp(-u)*sin(pi*v) + sqrt(abs(u)) + tanh(v) - log(1 + u**2)",
     lambda u, v: np.exp(-u) * np.sin(np.pi * v) + np.sqrt(np.abs(u)) + np.tanh(v) - np.log(1 + u**2)),
])
def test_expressions_compute_what_they_say(text, value, tmp_path):
    system = load_system(_write(tmp_path, _changed(**{"equations.u": {"f": text}, "parameters": {"F": None},
                                                      "train_envs": [{"F": 1.0}], "heldout": {},
                                                      "equations.v": {"g": "-F*v"}, "constants": {}})))
    u = torch.rand(3, *system.state_shape, dtype=torch.float64)
    out = system.rhs(0.0, u, system.env_tensor(system.train_envs).expand(3, -1))
    ref = value(u[:, 0].numpy(), u[:, 1].numpy())
    np.testing.assert_allclose(out[:, 0].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_coordinates_and_time_reach_the_terms(tmp_path):
    data = _changed(**{"equations.u": {"forcing": "sin(x)*cos(y) + t"}, "equations.v": {"decay": "-F*v - k*v"}})
    system = load_system(_write(tmp_path, data))
    u = torch.zeros(2, *system.state_shape, dtype=torch.float64)
    t = torch.tensor([0.5, 1.5], dtype=torch.float64)  # dopri5 gives each sample its own time
    out = system.rhs(t, u, system.env_tensor(system.train_envs))
    x = torch.arange(8, dtype=torch.float64)  # length 8 over 8 points: h = 1, x_i = i
    ref = torch.sin(x)[:, None] * torch.cos(x)[None, :]
    assert torch.allclose(out[0, 0], ref + 0.5) and torch.allclose(out[1, 0], ref + 1.5)


# ------------------------------------------------------------------------------ operators
def _order(errors: list[float]) -> float:
    return math.log2(errors[-2] / errors[-1])


@pytest.mark.parametrize("operator, scheme, order", [
    ("laplacian", "central", 2), ("laplacian", "nine_point", 2), ("laplacian", "central4", 4),
    ("dx", "central", 2), ("dy", "central4", 4), ("dxx", "central", 2), ("dxy", "central", 2),
])
def test_finite_difference_operators_converge_at_their_order(operator, scheme, order):
    errors = []
    for n in (16, 32, 64):
        grid = Grid(2, n, 2 * math.pi)
        x, y = grid.coordinate(0), grid.coordinate(1)
        f = torch.sin(x) * torch.cos(2 * y) + torch.cos(3 * x)
        exact = {"laplacian": -torch.sin(x) * torch.cos(2 * y) * 5 - 9 * torch.cos(3 * x),
                 "dx": torch.cos(x) * torch.cos(2 * y) - 3 * torch.sin(3 * x),
                 "dy": -2 * torch.sin(x) * torch.sin(2 * y),
                 "dxx": -torch.sin(x) * torch.cos(2 * y) - 9 * torch.cos(3 * x),
                 "dxy": -2 * torch.cos(x) * torch.sin(2 * y)}[operator]
        got = Discretization(operator, scheme, grid).apply(f.expand(n, n))
        errors.append(float((got - exact).abs().max()))
    assert abs(_order(errors) - order) < 0.1, errors


@pytest.mark.parametrize("operator", ["dx", "dy", "dxx", "dyy", "dxy", "laplacian"])
def test_fourier_operators_are_exact_on_resolved_modes_and_stencil_symbols_match(operator):
    grid = Grid(2, 16, 3.0)
    x, y = grid.coordinate(0), grid.coordinate(1)
    kx, ky = 2 * math.pi / 3.0 * 2, 2 * math.pi / 3.0 * 3
    f = torch.sin(kx * x + ky * y).expand(16, 16)
    exact = {"dx": kx * torch.cos(kx * x + ky * y), "dy": ky * torch.cos(kx * x + ky * y),
             "dxx": -kx**2 * f, "dyy": -ky**2 * f, "dxy": -kx * ky * f, "laplacian": -(kx**2 + ky**2) * f}[operator]
    assert torch.allclose(Discretization(operator, "fourier", grid).apply(f), exact.expand(16, 16), atol=1e-10)
    # A stencil's symbol is its Fourier transform: rfft(apply(a)) = symbol * rfft(a) on any field.
    a = torch.rand(16, 16, dtype=torch.float64)
    for scheme in ("central", "central4", "fourier"):
        d = Discretization(operator, scheme, grid)
        assert torch.allclose(grid.rfft(d.apply(a)), d.symbol() * grid.rfft(a), atol=1e-9)


# ------------------------------------------------------------------------------ solvers
def test_dopri5_error_follows_the_tolerance(tmp_path):
    # Against a float64 solve at tolerance 1e-12: the error shrinks with the tolerance.
    system = load_system(_write(tmp_path, BASE))
    params = system.env_tensor(system.train_envs)
    u0 = system.sample_initial_states([0, 1])
    t = system.times(2 * system.horizon)
    ref = load_system(_write(tmp_path, BASE), solver={"method": "dopri5", "rtol": 1e-12, "atol": 1e-12})
    truth = ref.solve(u0, params, t)
    errors = []
    for tol in (1e-5, 1e-7, 1e-9):
        s = load_system(_write(tmp_path, BASE), solver={"method": "dopri5", "rtol": tol, "atol": tol})
        errors.append(float((s.solve(u0, params, t) - truth).norm() / truth.norm()))
    assert errors[0] > 10 * errors[1] > 100 * errors[2] and errors[1] < 1e-6, errors


def test_etdrk4_is_fourth_order_and_agrees_with_dopri5(tmp_path):
    data = _changed(**{"discretization": "fourier", "solver": {"method": "etdrk4", "step": 0.5}})
    system = load_system(_write(tmp_path, data))
    params = system.env_tensor(system.train_envs)
    u0 = system.sample_initial_states([0, 1])
    t = system.times()
    ref = load_system(_write(tmp_path, data), solver={"method": "dopri5", "rtol": 1e-12, "atol": 1e-12})
    truth = ref.solve(u0, params, t)
    errors = []
    for h in (0.5, 0.25, 0.125):
        s = load_system(_write(tmp_path, data), solver={"method": "etdrk4", "step": h})
        errors.append(float((s.solve(u0, params, t) - truth).norm() / truth.norm()))
    assert 3.6 < _order(errors) < 4.4 and errors[-1] < 1e-7, errors


def test_etdrk4_takes_the_linear_part_per_trajectory(tmp_path):
    # feed's -F u and kill's -(F + k) v differ between trajectories: L is per trajectory.
    data = _changed(**{"discretization": "fourier", "solver": {"method": "etdrk4", "step": 0.25}})
    system = load_system(_write(tmp_path, data))
    assert sorted(str(p.coefficient) for p in system.spec.splits["v"].linear) == ["-F - k", "D/2"]
    params = system.env_tensor(system.train_envs)
    u0 = system.sample_initial_states([5, 5])
    t = system.times()
    one_by_one = torch.cat([system.solve(u0[i : i + 1], params[i : i + 1], t) for i in range(2)])
    assert torch.allclose(system.solve(u0, params, t), one_by_one, rtol=0, atol=1e-13)


def test_shipped_tracer_matches_its_exact_solution():
    # c_t = kappa lap(c) - U dx(c) - V dy(c): each Fourier mode decays and turns at its own rate.
    system = load_system(SYSTEMS_DIR / "tracer.yaml")
    envs = [system.train_envs[2], system.heldout["extrap"][0]]
    params = system.env_tensor(envs)
    u0 = system.sample_initial_states([0, 1])
    t = system.times(2 * system.horizon)
    grid = system.spec.grid
    k = [x * 2 * math.pi / grid.length for x in grid.wavenumbers()]
    U, V, kappa = (params[:, i].view(-1, 1, 1, 1) for i in range(3))
    rate = -kappa * (k[0] ** 2 + k[1] ** 2) - 1j * (U * k[0] + V * k[1])  # the states have no Nyquist mode
    exact = torch.stack([grid.irfft(grid.rfft(u0) * torch.exp(rate * s)) for s in t], dim=1)
    got = system.solve(u0, params, t)
    assert float(((got - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)).max()) < 1e-6


# ------------------------------------------------------------------------------ generated terms
def test_terms_sum_to_the_rhs_and_use_exactly_their_parameters(tmp_path):
    system = load_system(_write(tmp_path, BASE))
    u = torch.rand(2, *system.state_shape, dtype=torch.float64)
    params = system.env_tensor(system.train_envs)
    values = system.parameter_values(params)
    parts = {n: system.terms_rhs((n,), 0.0, u, values) for n in system.terms}
    assert torch.allclose(sum(parts.values()), system.rhs(0.0, u, params), rtol=1e-13, atol=1e-15)
    for n, part in parts.items():
        assert torch.equal(part, getattr(system, f"term_{n}")(0.0, u, values))
        for p in values:
            bumped = {**values, p: values[p] * 1.1 + 0.01}
            assert (not torch.equal(system.terms_rhs((n,), 0.0, u, bumped), part)) == (p in system.terms[n]), (n, p)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_generated_terms_parameter_gradients_match_finite_differences(path):
    system = load_system(path)
    part = PhysicsPart(system, "all", system.train_envs).double()
    env = torch.arange(len(system.train_envs))
    torch.manual_seed(0)
    u = system.sample_initial_states(list(range(len(env))))
    w = torch.randn_like(u)

    def loss() -> torch.Tensor:
        return (part(0.3, u, env) * w).sum()

    (grad,) = torch.autograd.grad(loss(), [part.theta])
    eps = 1e-6
    for e in range(part.theta.shape[0]):
        for i in range(part.theta.shape[1]):
            with torch.no_grad():
                part.theta[e, i] += eps
                up = float(loss())
                part.theta[e, i] -= 2 * eps
                down = float(loss())
                part.theta[e, i] += eps
            fd = (up - down) / (2 * eps)
            assert abs(fd - float(grad[e, i])) <= 1e-6 * max(1.0, abs(fd)), (part.names[i], fd, float(grad[e, i]))


def test_spectral_terms_symbol_and_stiffness(tmp_path):
    system = load_system(_write(tmp_path, BASE))
    assert system.spectral_terms == ("diffusion",)
    values = system.parameter_values(system.env_tensor(system.train_envs))
    u = torch.rand(2, *system.state_shape, dtype=torch.float64)
    L = system.linear_symbol(("diffusion", "reaction"), values)
    direct = system.terms_rhs(("diffusion",), 0.0, u, values)
    assert torch.allclose(torch.fft.rfft2(direct), L * torch.fft.rfft2(u), atol=1e-12)
    # The 5-point Laplacian's spectrum reaches -8/h^2: rate 8 D for u (h = 1).
    assert system.stiffness(("diffusion",), values) == pytest.approx(8 * 0.1)
    assert system.stiffness(("reaction",), values) == 0.0


# ------------------------------------------------------------------------------ bad input
BAD = {
    # a symbol that is neither a field, a parameter nor an operator
    "unknown symbol": ({"equations.u.feed": "F*(1 - w)"}, ["term 'feed' of field u", "'w'", "declare it"]),
    "unknown function": ({"equations.u.feed": "erf(u)"}, ["term 'feed' of field u", "erf", "use one of"]),
    "eval attempt": ({"equations.u.feed": "__import__('os').getcwd()"}, ["term 'feed' of field u", "named functions"]),
    "attribute": ({"equations.u.feed": "u.real"}, ["term 'feed' of field u", "Attribute"]),
    "caret power": ({"equations.u.reaction": "-u*v^2"}, ["term 'reaction' of field u", "**"]),
    "syntax": ({"equations.u.reaction": "-u*v**"}, ["term 'reaction' of field u", "not an expression"]),
    # an operator on an ODE
    "operator on an ODE": ({"grid": _DELETE,
                            "initial_state": {"kind": "uniform", "ranges": {"u": [0, 1], "v": [0, 1]}}},
                           ["term 'diffusion' of field u", "needs a grid", "declare grid"]),
    "2-D operator on a 1-D grid": ({"grid": {"dims": 1, "size": 8, "length": 8.0}, "equations.u.diffusion": "D*dy(u)",
                                    "initial_state": {"kind": "uniform", "ranges": {"u": [0, 1], "v": [0, 1]}}},
                                   ["term 'diffusion' of field u", "dy", "2-D grid"]),
    # a field with no equation
    "field without equation": ({"equations.v": _DELETE}, ["field v has no equation", "add equations"]),
    "equation of an unknown field": ({"equations.w": {"decay": "-w"}}, ["field 'w'", "add it to fields"]),
    # a parameter missing from an environment
    "parameter missing from an environment": ({"train_envs": [{"F": 0.03}]},
                                              ["environment", "parameter k", "add k:"]),
    "unknown parameter in an environment": ({"heldout": {"interp": [{"k": 0.05, "q": 1.0}]}},
                                            ["environment", "'q'", "its parameters are F, k"]),
    # a term name used twice (in one field's equation)
    "term given twice": ("twice", ["term 'reaction' of field u is given twice", "rename one"]),
    "learned names no term": ({"learned": ["feed", "friction"]}, ["learned", "'friction'", "its terms are"]),
    # an expression that is not a sum of terms the solver can split
    "equation not a sum of named terms": ({"equations.u": "D*laplacian(u) - u*v**2"},
                                          ["equation of field u", "sum of named terms", "diffusion:"]),
    "stiff term etdrk4 cannot split": ({"discretization": "fourier", "solver": {"method": "etdrk4", "step": 0.1},
                                        "equations.u.diffusion": "D*u*laplacian(u)"},
                                       ["term 'diffusion' of field u", "etdrk4", "use solver: dopri5"]),
    "etdrk4 on an ODE": ({"grid": _DELETE, "equations.u.diffusion": "-D*u", "equations.v.diffusion": "-D*v",
                          "initial_state": {"kind": "uniform", "ranges": {"u": [0, 1], "v": [0, 1]}},
                          "solver": {"method": "etdrk4", "step": 0.1}}, ["etdrk4 needs a periodic grid", "dopri5"]),
    # a grid the operators cannot use
    "odd grid for fourier": ({"grid.size": 9, "discretization": {"laplacian": "fourier"}},
                             ["grid size 9 is odd", "laplacian uses fourier", "even size"]),
    "nine-point on 1-D": ({"grid": {"dims": 1, "size": 8, "length": 8.0}, "discretization": {"laplacian": "nine_point"},
                          "initial_state": {"kind": "uniform", "ranges": {"u": [0, 1], "v": [0, 1]}}},
                         ["laplacian", "nine_point", "use one of: central, central4, fourier"]),
    "tiny grid": ({"grid.size": 2}, ["grid size=2", "integer >= 4"]),
    "negative length": ({"grid.length": -1.0}, ["grid length=-1.0", "positive"]),
    "squares on 1-D": ({"grid": {"dims": 1, "size": 8, "length": 8.0}, "equations.u.diffusion": "D*dxx(u)",
                        "equations.v.diffusion": "D*dxx(v)",
                        "initial_state": {"kind": "squares", "background": {"u": 1, "v": 0}, "inside": {"u": 0, "v": 1},
                                          "count": 1, "size": 2}}, ["squares needs a 2-D grid"]),
    # names and structure
    "name reused": ({"constants": {"F": 0.1}}, ["'F' is declared as a parameter and as a constant"]),
    "reserved name": ({"fields": ["u", "x"]}, ["field name 'x' is reserved", "rename"]),
    "unused parameter": ({"parameters": {"F": 0.03, "k": None, "q": 1.0}}, ["parameter q is used by no term"]),
    "unknown key": ({"equatoins": {}}, ["unknown key 'equatoins'"]),
    "term name a System method uses": ({"equations.v.kill": _DELETE, "equations.v.parameters": "-(F + k)*v"},
                                       ["term name 'parameters' (field v) is reserved", "rename"]),
    "missing key": ({"initial_state": _DELETE}, ["key 'initial_state' is missing"]),
    "unknown solver": ({"solver": {"method": "euler"}}, ["solver method 'euler'", "dopri5, rk4, etdrk4"]),
    "built-in name": ({"name": "gray_scott"}, ["built-in system", "set name:"]),
    "bad initial state": ({"initial_state": {"kind": "random_field", "mean": {"u": 0}, "std": {"u": 1}, "modes": 2}},
                          ["initial_state.mean must give one value per field"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_one_line_error_naming_the_file_the_place_and_the_fix(case, tmp_path):
    change, expected = BAD[case]
    if change == "twice":
        text = yaml.safe_dump(BASE, sort_keys=False).replace("    reaction: -u*v**2\n",
                                                             "    reaction: -u*v**2\n    reaction: -u*v\n", 1)
        path = _write(tmp_path, text)
    else:
        path = _write(tmp_path, _changed(**change))
    for attempt in (lambda: load_system(path), lambda: load_config(str(path))):
        with pytest.raises(UserError) as e:
            attempt()
        message = str(e.value)
        assert "\n" not in message and str(path) in message, message
        for part in expected:
            assert part in message, (part, message)


def test_nothing_in_a_term_is_evaluated(tmp_path, monkeypatch):
    # Parsing never calls eval/exec: with both replaced by tripwires, every shipped file and an
    # injection attempt still parse (or fail) normally.
    import builtins

    def tripwire(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("eval/exec was called")

    monkeypatch.setattr(builtins, "eval", tripwire)
    monkeypatch.setattr(builtins, "exec", tripwire)
    for path in SHIPPED:
        system_from_config("copy_" + path.stem, load_system(path).config)
    with pytest.raises(UserError, match="Subscript syntax is not allowed"):
        load_system(_write(tmp_path, _changed(**{"equations.u.feed": "().__class__.__bases__[0]"})))


# ------------------------------------------------------------------------------ runs
@pytest.mark.slow
def test_cli_runs_generate_train_evaluate_and_leaderboard_on_a_system_file(tmp_path, capsys):
    from tiny import TINY

    from leads.cli import main

    path = _write(tmp_path, BASE)
    dirs = [f"--set=runs_dir={tmp_path / 'runs'}", f"--set=data.dir={tmp_path / 'data'}",
            f"--set=results_dir={tmp_path / 'results'}"]
    common = ["--env", str(path), *dirs, *(f"--set={o}" for o in TINY if not o.startswith("logger"))]
    assert main(["generate", *common]) == 0
    assert "small/train" in capsys.readouterr().out
    assert main([*common, "--method", "erm", "--logger", "none", "--no-progress"]) == 0
    ckpt = next((tmp_path / "runs" / "small").glob("*/checkpoints/best.ckpt"))
    assert main(["evaluate", "--env", str(path), "--ckpt", str(ckpt), "--logger", "none", *dirs[1:]]) == 0
    assert main(["leaderboard", *common, "--logger", "none"]) == 0
    assert "erm" in capsys.readouterr().out
    rows = (tmp_path / "results" / "small" / "results.jsonl").read_text().splitlines()
    assert len(rows) >= 4


def test_learned_terms_are_left_to_the_residual_in_their_fields_only(tmp_path):
    from tiny import tiny_config

    from leads.models.forecaster import Forecaster
    from leads.models.physics import method_label

    # kill is unknown and only in v's equation: the residual acts on v alone.
    path = _write(tmp_path, _changed(learned=["kill"]))
    cfg = tiny_config(str(path), tmp_path, "physics.terms=known", "model.name=conv")
    system = system_of(cfg)
    assert system.learned_terms == ("kill",) and system.check_terms("known") == ("diffusion", "reaction", "feed")
    assert method_label(cfg) == "lowrank+phys[known]"
    module = Forecaster(cfg, system.state_shape, ["a", "b"])
    assert module.physics is not None and module.physics.terms == ("diffusion", "reaction", "feed")
    u = torch.rand(2, *system.state_shape)
    with torch.no_grad():
        for p in module.model.parameters():
            p.normal_()
        residual = module.residual_field(u, torch.tensor([0, 1]))
    assert float(residual[:, 0].abs().max()) == 0 and float(residual[:, 1].abs().max()) > 0
    # Without declared learned terms (or with every field's terms missing) nothing is masked.
    assert Forecaster(tiny_config(str(_write(tmp_path, BASE, "plain.yaml")), tmp_path, "physics.terms=[diffusion]",
                                  "model.name=conv"), system.state_shape, ["a", "b"]).residual_mask is None
    with pytest.raises(UserError, match="every term of small is declared learned"):
        load_system(_write(tmp_path, _changed(learned=["diffusion", "reaction", "feed", "kill"]))).check_terms("known")


def test_the_documented_system_file_works_as_documented(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "docs" / "equations.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert len(example.splitlines()) < 25
    path = _write(tmp_path, example, "brusselator.yaml")
    system = load_system(path)
    assert system.name == "brusselator" and system.state_shape == (2, 32, 32) and system.param_names == ("A", "B")
    assert system.terms == {"diffusion": ("D_u", "D_v"), "reaction": ("A", "B")}
    assert system.describe_equations().startswith("u_t = [diffusion: D_u*laplacian(u)] + [reaction: ")
    assert system.solver_description == ("dopri5 (adaptive, step per trajectory), rtol=1e-07, atol=1e-07, float64; "
                                         "operators laplacian: central (order 2)")
    cfg = load_config(str(path))
    assert cfg.train.max_steps == 1000 and cfg.model.name == "conv"
    assert cfg.adapt.sets == ["interp", "extrap"]
    states = system.generate([0, 1], system.env_tensor(system.train_envs[:2]), system.times(2.0))
    assert torch.isfinite(states).all() and float(states[:, -1].std()) > 0


def test_the_readme_system_file_is_the_shipped_one_without_its_run_settings(tmp_path):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert len(example.splitlines()) < 25
    mine = load_system(_write(tmp_path, example, "fitzhugh_nagumo.yaml"))
    shipped = load_system(SYSTEMS_DIR / "fitzhugh_nagumo.yaml")
    assert mine.describe_equations() == shipped.describe_equations()
    assert mine.solver_description == shipped.solver_description
    assert mine.train_envs == shipped.train_envs and mine.state_shape == shipped.state_shape
    # the README shows one environment of each held-out set of the shipped file
    assert all(mine.heldout[k][0] == shipped.heldout[k][0] for k in ("interp", "extrap"))
    t = mine.times(1.0)
    envs = mine.env_tensor(mine.train_envs[:1])
    assert torch.equal(mine.generate([0], envs, t), shipped.generate([0], envs, t))


@pytest.mark.slow
def test_complete_generated_physics_identifies_new_environments(tmp_path):
    # As for the built-in Lotka-Volterra (tests/test_physics.py), from the system file: one
    # trajectory per new environment, no network, every parameter within 1%.
    from tiny import tiny_config

    from leads.config.schema import RunConfig
    from leads.evaluation.heldout import evaluate_heldout
    from leads.training.train import train

    cfg = RunConfig.of(tiny_config(str(SYSTEMS_DIR / "lotka_volterra.yaml"), tmp_path, "physics.terms=all",
                                   "physics.residual=false", "physics.substeps=4", "train.max_steps=400",
                                   "train.val_every=200", "train.lr=2e-2", "adapt.steps=30", "adapt.val_every=1",
                                   "adapt.optimizer=gauss_newton", "adapt.shots=1", "data.window=null"))
    run = train(cfg, progress=False)
    result = evaluate_heldout(run.module, cfg, "extrap")
    system = system_of(cfg)
    assert result.identified is not None and len(result.identified) == len(system.heldout["extrap"])
    for row, env in zip(result.identified, system.heldout["extrap"], strict=True):
        assert set(row) == set(system.param_names)
        for p, ident in row.items():
            assert ident.true == pytest.approx(system.complete_env(env)[p])
            assert ident.rel_error <= 1e-2, (p, ident)
