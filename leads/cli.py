"""Command line: ``python run.py [generate|evaluate|leaderboard] --env NAME [options]``.

Without a command, ``run.py`` runs the main job: generate data if missing, train, evaluate
in-domain, adapt to held-out environments and print a summary.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from envs.errors import UserError

COMMANDS = ("train", "generate", "evaluate", "leaderboard")


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"run.py {command}" if command != "train" else "run.py",
                                description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, help="system name, e.g. gray_scott")
    p.add_argument("--profile", default=None, help="config profile: quick (default) or paper")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.lr=3e-4 (repeatable)")
    if command in ("train", "evaluate"):
        p.add_argument("--method", default=None, help="lowrank (default), lora, coda, leads, erm, per_env")
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
        p.add_argument("--devices", default=None, help="Lightning devices (e.g. 2)")
        p.add_argument("--strategy", default=None, help="Lightning strategy (e.g. ddp)")
        p.add_argument("--logger", default=None, help="wandb (default, offline) | csv | none")
        p.add_argument("--wandb", default=None, help="W&B mode: offline (default) | online | disabled")
    if command == "train":
        p.add_argument("--resume", action="store_true", help="continue the last run of this config")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.set)
    for flag, key in (("method", "method"), ("seed", "seed"), ("device", "device"), ("devices", "devices"),
                      ("strategy", "strategy"), ("logger", "logger"), ("wandb", "wandb.mode")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    args = _parser(command).parse_args(argv)
    try:
        return _run(command, args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(command: str, args: argparse.Namespace) -> int:
    from leads.config import load_config

    if getattr(args, "wandb", None) is None and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"  # never try to log in unless asked
    cfg = load_config(args.env, args.profile, _overrides(args))
    handler: dict[str, Any] = {"train": _train, "generate": _generate}
    if command not in handler:
        raise UserError(f"'{command}' is not available yet")
    return handler[command](cfg, args)


def _train(cfg: dict[str, Any], args: argparse.Namespace) -> int:
    from leads.experiment import run_experiment

    run_experiment(cfg, resume=args.resume, progress=not args.no_progress)
    return 0


def _generate(cfg: dict[str, Any], args: argparse.Namespace) -> int:
    from datasets import describe_split, ensure_dataset
    from leads.train import system_of

    paths = ensure_dataset(system_of(cfg), cfg["data"])
    for path in paths.values():
        print(describe_split(path))
    return 0
