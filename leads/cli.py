"""Command line: ``python run.py [COMMAND] --env NAME [options]``, COMMAND one of train (the default),
generate, evaluate, leaderboard, reproduce, export, score, baseline.

Without a command, ``run.py`` runs the main job: generate data if missing, train, evaluate
in-domain, adapt to held-out environments, append result rows and print a summary.

  python run.py --env gray_scott                                  # one run (method lowrank, seed 0)
  python run.py --env gray_scott --method all --seeds 3           # every method x 3 seeds + leaderboard
  python run.py --env gray_scott --heldout "F=0.045,k=0.064"      # also adapt to this environment
  python run.py --env systems/fitzhugh_nagumo.yaml                # a system declared by its equations
  python run.py evaluate --env gray_scott --ckpt runs/gray_scott/<run>/checkpoints/best.ckpt \\
      --heldout "hot:F=0.045,k=0.064;F=0.05,k=0.06" --shots 2 --few-shot
  python run.py leaderboard --env gray_scott [--profile paper]
  python run.py generate --env gray_scott [--heldout ...]
  python run.py reproduce --protocol geps_gray_scott --seeds 3 [--max-steps N]   # a published table
  python run.py export --env gray_scott --out inputs.h5           # evaluation inputs for another codebase
  python run.py score --env gray_scott --predictions pred.h5 --name my_fno   # rank its predictions
  python run.py baseline --env qg_ocean           # persistence and the coarse physical model, scored as methods

Any config value can also be given as ``--section.key=value`` (``--train.lr=3e-4``), the form
a W&B sweep agent passes its parameters in (``configs/sweeps/``).

Held-out sets (``--heldout``, repeatable): a set name (``interp``), environments ``p=v,...``
separated by ``;`` with an optional ``name:`` prefix, or a YAML file mapping set names to
environment lists. They are adapted to in addition to the config's ``adapt.sets``
(``--set adapt.sets=[]`` for only them).
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from leads.envs.errors import UserError
from leads.envs.registry import SYSTEMS
from leads.training.interrupted import AfterTraining, Interrupted

if TYPE_CHECKING:
    from leads.config.schema import RunConfig

TEST_CURVE_HELP = "also score the test split at every validation, for learning-curve figures only"


def _profiles_help() -> str:
    """The profiles of every system (read from configs/ when the parser is built, not at import)."""
    from leads.reporting.keys import system_profiles

    listed = "; ".join(f"{name}: {', '.join(system_profiles(name))}" for name in sorted(SYSTEMS)
                       if system_profiles(name))
    return f"config profile (default quick). Profiles by system: {listed}"


def _common(p: argparse.ArgumentParser, profile: bool = True) -> None:
    p.add_argument("--env", required=True, help="system name, e.g. gray_scott, or a system file, e.g. "
                                                "systems/fitzhugh_nagumo.yaml")
    if profile:
        p.add_argument("--profile", default=None, help=_profiles_help())
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")


def _heldout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heldout", action="append", default=[], metavar="SET",
                   help="held-out set to adapt to: a name, 'p=v,...;p=v,...' (optionally 'name:...') "
                        "or a YAML file (repeatable)")


def _runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("--logger", default=None, help="wandb (default, offline) | csv | none")
    p.add_argument("--wandb", nargs="?", const="offline", default=None,
                   help="W&B mode: offline (default; also --wandb alone) | online | disabled")


def _train_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _heldout(p)
    _runtime(p)
    p.add_argument("--method", default=None,
                   help="lowrank (default), lora, coda, leads, erm, per_env; a comma list; or all")
    p.add_argument("--seed", type=int, default=None, help="training seed (first seed with --seeds)")
    p.add_argument("--seeds", type=int, default=1, help="number of consecutive seeds to run")
    p.add_argument("--few-shot", action="store_true", help="also adapt with k = 1, 2, 4, 8 trajectories")
    p.add_argument("--test-curve", action="store_true", help=TEST_CURVE_HELP)
    p.add_argument("--devices", default=None, help="Lightning devices (e.g. 2)")
    p.add_argument("--strategy", default=None, help="Lightning strategy (e.g. ddp)")
    p.add_argument("--resume", action="store_true", help="continue the last run of this config")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _jobs(p)


def _jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="with several runs: N side by side, each with its share of the CPUs (at most one a CPU; "
                        "docs/parallel_runs.md)")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _common(p, profile=False)
    _heldout(p)
    _runtime(p)
    p.add_argument("--ckpt", required=True, help="checkpoint written by training (its config is used)")
    p.add_argument("--shots", type=int, default=None, help="adaptation trajectories per new environment")
    p.add_argument("--few-shot", action="store_true", help="also adapt with k = 1, 2, 4, 8 trajectories")


def _generate_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _heldout(p)
    p.add_argument("--no-progress", action="store_true", help="no progress lines: only the files' descriptions")


def _leaderboard_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--shots", type=int, default=None, help="rows adapted with this many trajectories (default: "
                                                            "the config's adapt.shots)")
    p.add_argument("--logger", default=None, help="wandb (default, offline): also log the table | none")
    p.add_argument("--wandb", nargs="?", const="offline", default=None,
                   help="W&B mode: offline (default; also --wandb alone) | online | disabled")


def _export_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _heldout(p)
    p.add_argument("--out", required=True, help="the HDF5 file to write (never overwritten)")
    p.add_argument("--training-data", action="store_true",
                   help="also write the protocol's training and validation trajectories (/train, /val)")


def _score_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _heldout(p)
    p.add_argument("--predictions", required=True, help="HDF5 predictions for the exported inputs")
    p.add_argument("--name", required=True, help="the model's name on the leaderboard")
    p.add_argument("--seed", type=int, default=0, help="the model's seed (several give mean ± std)")
    p.add_argument("--train-steps", type=int, default=None,
                   help="the training steps the model took, shown beside its numbers (declared, not measured)")
    p.add_argument("--train-seconds", type=float, default=None,
                   help="its training time in seconds, shown beside its numbers (declared, not measured)")
    p.add_argument("--logger", default=None, help="wandb (default, offline): also log the leaderboard | none")


def _baseline_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _heldout(p)
    p.add_argument("--logger", default=None, help="wandb (default, offline): also log the leaderboard | none")


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", required=True, help="a protocol of configs/protocols.yaml, e.g. geps_gray_scott")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 of every method (default 3)")
    p.add_argument("--max-steps", type=int, default=None, help="a reduced training budget for every run")
    p.add_argument("--methods", default=None, help="a comma list of the protocol's methods (default: all)")
    p.add_argument("--test-curve", action="store_true", help=TEST_CURVE_HELP)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of every run (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _jobs(p)


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.set)
    for flag, key in (("device", "device"), ("devices", "devices"), ("strategy", "strategy"),
                      ("logger", "logger"), ("wandb", "wandb.mode")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


# ------------------------------------------------------------------------------ commands
def _train(args: argparse.Namespace) -> int:
    from leads.batch import jobs_for, prepare, run_batch
    from leads.config.loading import load_config
    from leads.config.paths import check_output_dirs
    from leads.evaluation.heldout import heldout_sets
    from leads.jobs import run_experiment
    from leads.models.methods import resolve_method

    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds} must be at least 1")
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs} must be at least 1")
    base = load_config(args.env, args.profile, _overrides(args) + ([f"seed={args.seed}"] if args.seed is not None
                                                                   else []))
    methods = list(base.methods) if args.method == "all" else (args.method or base.method).split(",")
    cfgs = []
    for method in methods:
        for seed in range(base.seed, base.seed + args.seeds):
            cfg = load_config(args.env, args.profile, _overrides(args) + [f"method={method.strip()}", f"seed={seed}"])
            cfg = cfg.replace(adapt=cfg.adapt.replace(sets=[*cfg.adapt.sets, *args.heldout]))
            heldout_sets(cfg)  # every run's sets and directories are checked before the first one trains
            resolve_method(cfg.method)
            check_output_dirs(cfg)
            cfgs.append(cfg)
    args.batch = len(cfgs) > 1  # the command that continues it is then the batch command itself
    args.configs = cfgs
    progress = not args.no_progress
    _use_threads(cfgs[0], progress)
    if not args.batch:
        run_experiment(cfgs[0], resume=args.resume, progress=progress, few_shot=args.few_shot,
                       test_curve=args.test_curve)
        return 0
    jobs = jobs_for(cfgs)
    prepare(jobs, progress)

    def run(job: Any, resume: bool) -> Any:
        return run_experiment(job.cfg, resume=resume, progress=progress, few_shot=args.few_shot,
                              test_curve=args.test_curve)["run"].run_dir

    done = run_batch(jobs, run, base.system_name) if args.jobs == 1 else _side_by_side(args, jobs, base)
    failed = [d.job.label for d in done if d.error]
    print(_write_leaderboard(base, base.adapt.shots), end="")
    if failed:
        print(f"error: {len(failed)} run(s) {'diverged' if args.jobs == 1 else 'failed'}: {', '.join(failed)}",
              file=sys.stderr)
    return 1 if failed else 0


def _side_by_side(args: argparse.Namespace, jobs: list[Any], base: Any) -> list[Any]:
    """The runs of a batch, up to ``args.jobs`` at once, each its own ``run.py`` process."""
    from leads.side_by_side import job_command, run_batch_side_by_side

    flags = [*(f"--heldout={h}" for h in args.heldout), *(["--few-shot"] if args.few_shot else []),
             *(["--test-curve"] if args.test_curve else [])]

    def command(job: Any, resume: bool) -> tuple[str, ...]:
        return job_command(args.env, args.profile, _overrides(args), job.cfg.method, job.cfg.seed,
                           [*flags, *(["--resume"] if resume else [])])

    return run_batch_side_by_side(jobs, command, base.system_name, args.jobs, progress=not args.no_progress)


def _use_threads(cfg: Any, progress: bool | None = None) -> None:
    """Set torch's threads for the work of ``cfg`` and say so (leads/threads.py)."""
    from leads.config.loading import system_of
    from leads.datasets.progress import announce
    from leads.threads import use_threads

    announce(use_threads(cfg, system_of(cfg).state_shape).describe(), progress)


def _evaluate(args: argparse.Namespace) -> int:
    from leads.config.loading import system_name
    from leads.envs.equations import is_system_file
    from leads.jobs import evaluate_checkpoint

    if args.env not in SYSTEMS and not is_system_file(args.env):
        raise UserError(f"unknown system '{args.env}'; choose one of: {', '.join(sorted(SYSTEMS))}, or give a "
                        "system file's path (e.g. systems/fitzhugh_nagumo.yaml)")
    evaluate_checkpoint(args.ckpt, system_name(args.env), _overrides(args), args.heldout, args.shots, args.few_shot)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from leads.config.loading import load_config, system_of
    from leads.config.paths import check_output_dir
    from leads.datasets.cache import ensure_dataset
    from leads.datasets.h5 import describe_split
    from leads.evaluation.heldout import resolve_sets

    cfg = load_config(args.env, args.profile, _overrides(args))
    check_output_dir(cfg.data.dir, "data.dir")
    system = system_of(cfg)
    progress = False if args.no_progress else None  # None: as the terminal and LEADS_PROGRESS say
    _use_threads(cfg, progress)
    custom = {k: v for k, v in resolve_sets(system, args.heldout).items() if k not in system.heldout}
    for path in ensure_dataset(system, cfg.data, custom_heldout=custom, progress=progress).values():
        print(describe_split(path))
    return 0


def _protocol_config(args: argparse.Namespace) -> Any:
    from leads.config.loading import load_config

    cfg = load_config(args.env, args.profile, _overrides(args))
    _use_threads(cfg)
    return cfg.replace(adapt=cfg.adapt.replace(sets=[*cfg.adapt.sets, *args.heldout]))


def _export(args: argparse.Namespace) -> int:
    from leads.external import export_inputs, training_files

    cfg = _protocol_config(args)
    print(f"written: {export_inputs(cfg, args.out, training_data=args.training_data)}"
          + (" (with the training and validation data: /train, /val)" if args.training_data else ""))
    for split, path in training_files(cfg).items():
        print(f"{split} data of this protocol: {path} (format: docs/data_format.md)")
    return 0


def _score(args: argparse.Namespace) -> int:
    from leads.config.paths import check_output_dir
    from leads.external import score_predictions_file
    from leads.jobs import format_scores
    from leads.reporting.published import headline_metric

    cfg = _protocol_config(args)
    check_output_dir(cfg.results_dir, "results_dir")
    scored = score_predictions_file(cfg, args.predictions, args.name, args.seed, args.train_steps,
                                    args.train_seconds)
    headline = headline_metric(cfg)
    for group, s in scored.scores.items():
        print(f"{args.name} · {group}: {format_scores(s, headline)}")
    if scored.replaced:
        print(f"replaced {scored.replaced} rows of an earlier scoring of {args.name} seed {args.seed}")
    print(_write_leaderboard(cfg, cfg.adapt.shots), end="")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from leads.baseline import score_baseline
    from leads.config.paths import check_output_dir

    cfg = _protocol_config(args)
    check_output_dir(cfg.results_dir, "results_dir")
    for method, groups in score_baseline(cfg).items():
        for group, s in groups.items():
            mean, std = s.summary("rel_l2")
            print(f"{method} · {group}: relative L2 (0, T] {mean:.3e} ± {std:.1e} over {len(s.env)} trajectories")
    print(_write_leaderboard(cfg, cfg.adapt.shots), end="")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from leads.config.loading import load_config

    cfg = load_config(args.env, args.profile, _overrides(args))
    print(_write_leaderboard(cfg, cfg.adapt.shots if args.shots is None else args.shots), end="")
    return 0


def _write_leaderboard(cfg: RunConfig, shots: int) -> str:
    """The leaderboard of the protocol ``cfg`` follows, written to ``leaderboard_<protocol>.md``/
    ``.csv`` beside its results and logged to W&B if active. It is returned (to print) even where
    its files cannot be written, with a line that says so."""
    import uuid

    from leads.config.paths import check_output_dir
    from leads.reporting import leaderboard
    from leads.reporting.results import read_rows, results_path
    from leads.training.loggers import make_logger, wandb_mode

    path = results_path(cfg)
    try:
        check_output_dir(cfg.results_dir, "results_dir")
    except UserError:
        if not path.is_file():  # a file in the way, or nowhere to read from: say so
            raise
        # results it cannot write beside: the table is still printed (write_or_say says so)
    rows = read_rows(path)
    if not rows:
        raise UserError(f"no results in {path}; run `python run.py --env {cfg.system_name}` or "
                        "`python run.py evaluate` first")
    lb = leaderboard.for_config(rows, cfg, shots)
    if not lb.lines:
        others = sorted({str(r.get("profile")) for r in rows if r.get("system") == cfg.system_name})
        raise UserError(f"{path} has no rows of protocol {lb.profile} (profile '{cfg.profile}') with {shots} "
                        f"adaptation trajectories; it has rows of profiles {', '.join(others) or 'none'}: choose "
                        "one with --profile (and the same --set data settings), or another --shots")
    written = leaderboard.write_or_say(lb, path.parent)
    if written.startswith("written") and cfg.logger == "wandb" and wandb_mode(cfg) != "disabled":
        name = f"leaderboard-{cfg.system_name}-{lb.profile}-{uuid.uuid4().hex[:8]}"
        run = make_logger(cfg, path.parent, name, job_type="leaderboard").experiment
        run.log({"leaderboard": leaderboard.wandb_table(lb)})
        run.finish()
    return leaderboard.to_markdown(lb) + f"\n{written}\n"


def _reproduce(args: argparse.Namespace) -> int:
    from leads.reproduce import reproduce

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else []
    out = reproduce(args.protocol, args.seeds, args.max_steps, methods, args.set, progress=not args.no_progress,
                    test_curve=args.test_curve, jobs=args.jobs)
    print(out["leaderboard"], end="")
    if out["failed"]:
        print(f"error: {len(out['failed'])} run(s) {'diverged' if args.jobs == 1 else 'failed'}: "
              f"{', '.join(out['failed'])}", file=sys.stderr)
    return 1 if out["failed"] else 0


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "train": (_train_args, _train),
    "generate": (_generate_args, _generate),
    "evaluate": (_evaluate_args, _evaluate),
    "leaderboard": (_leaderboard_args, _leaderboard),
    "reproduce": (_reproduce_args, _reproduce),
    "export": (_export_args, _export),
    "score": (_score_args, _score),
    "baseline": (_baseline_args, _baseline),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    add_args, handler = COMMANDS[command]
    parser = argparse.ArgumentParser(prog="run.py" if command == "train" else f"run.py {command}",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    add_args(parser)
    args, extra = parser.parse_known_args(argv)
    overrides = _config_flags(extra, parser)
    if overrides:
        if not hasattr(args, "set"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.set = [*args.set, *overrides]
    # Never try to log in unless asked; a W&B sweep agent (WANDB_SWEEP_ID) runs online by design.
    if getattr(args, "wandb", None) is None and "WANDB_MODE" not in os.environ and "WANDB_SWEEP_ID" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    # A scheduler's SIGTERM stops a run like Ctrl-C (signal handlers can only be set in the main thread).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        return _handle(handler, args, command, argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _config_flags(extra: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--train.lr=3e-4`` (how a W&B sweep agent passes parameters) -> ``train.lr=3e-4``, the
    form of ``--set``; anything else left over is an error."""
    out = []
    for arg in extra:
        key, sep, value = arg[2:].partition("=")
        if not (arg.startswith("--") and sep and key and all(part.isidentifier() for part in key.split("."))):
            hint = " (config overrides are --key=value, e.g. --train.lr=3e-4)" if arg.startswith("--") else ""
            parser.error(f"unrecognized argument: {arg}{hint}")
        out.append(f"{key}={value}")
    return out


def _handle(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace, command: str,
            argv: list[str]) -> int:
    try:
        return handler(args)
    except Interrupted as e:
        print(f"\n{e.describe(_continue_command(command, argv, args, e.resumable or e.phase == 'evaluation'))}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside a training run: generating, evaluating, writing a leaderboard
        print(f"\ninterrupted; every file finished before is kept whole (partial ones are discarded): "
              f"rerun with: {_continue_command(command, argv, args, False)}", file=sys.stderr)
        return 130
    except AfterTraining as e:
        print(f"error: {e.describe(_continue_command(command, argv, args, True))}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        # Files are written atomically (data, checkpoints) or appended whole (results): what was
        # finished before is intact.
        print(f"error: {_one_line(e)}; {_DISK_FIX.get(command, 'free space')} and rerun: "
              f"{_continue_command(command, argv, args, _has_checkpoint(args))}", file=sys.stderr)
        return 2


_DISK_FIX = {"train": "free space (or choose another --set data.dir / runs_dir / results_dir)",
             "reproduce": "free space (or choose another --set data.dir / runs_dir / results_dir)",
             "evaluate": "free space (or choose another --set results_dir / data.dir)",
             "score": "free space (or choose another --set results_dir / data.dir)",
             "generate": "free space (or choose another --set data.dir)",
             "export": "free space (or choose another --out)",
             "leaderboard": "free space"}


def _one_line(e: OSError) -> str:
    """An OS error on one line, naming its file: HDF5's own messages span several lines."""
    reason = " ".join(str(e.strerror or e).split())
    reason = reason if len(reason) <= 200 else reason[:200] + "..."
    return f"{reason} writing {e.filename}" if e.filename else reason


def _has_checkpoint(args: argparse.Namespace) -> bool:
    """Whether the single run of a ``train`` command has a checkpoint to resume from."""
    from leads.batch import NEW, job_state

    configs = getattr(args, "configs", None)
    return bool(configs) and len(configs) == 1 and job_state(configs[0])[0] != NEW


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _continue_command(command: str, argv: list[str], args: argparse.Namespace, resumable: bool) -> str:
    """The command line that goes on from where this one stopped: a batch (``reproduce``,
    ``--seeds N``, ``--method all``) is its own command, which skips finished runs and resumes
    interrupted ones; a single run is this command with ``--resume`` when it has a checkpoint to
    continue from (``resumable``); other commands are run again as they were."""
    prefix = ["python", "run.py", *([] if command == "train" else [command])]
    kept = [a for a in argv if a != "--resume"]
    if command != "train" or getattr(args, "batch", False):
        return shlex.join([*prefix, *(argv if command != "train" else kept)])
    return shlex.join([*prefix, *kept, *(["--resume"] if resumable else [])])


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
