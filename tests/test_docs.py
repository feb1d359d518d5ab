"""The README and the documentation cannot drift from the code: every ``python run.py ...`` command
line they show parses and names a system, profile, protocol, method and config keys that exist,
every script they run exists, and every relative link points at a file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from leads import cli
from leads.config.loading import load_config
from leads.envs.equations import is_system_file
from leads.envs.registry import SYSTEMS
from leads.models.methods import resolve_method
from leads.reproduce import load_protocols, plan

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]

# Placeholders the pages use for values a reader chooses.
PLACEHOLDERS = {"<system>": "gray_scott", "<m>": "lowrank", "<s>": "0", "<method>": "lowrank", "<seed>": "0"}


def _code_lines(text: str) -> list[str]:
    """Command lines of fenced and indented code blocks, continuation lines joined, and of inline
    code spans."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    blocks += ["\n".join(m.group(0).splitlines()) for m in re.finditer(r"(?m)(?:^ {4,}\S.*\n?)+", text)]
    lines = []
    for block in blocks:
        lines += re.sub(r"\\\n\s*", " ", block).splitlines()
    spans = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))  # may wrap across lines
    lines += [" ".join(span.split()) for span in spans]
    return [ln.strip() for ln in lines]


def _commands(prefix: str) -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for line in _code_lines(page.read_text()):
            for part in re.split(r"\s*(?:&&|;\s)\s*", line):
                part = part.strip()
                if part.startswith(prefix) and part != prefix:  # a bare "python run.py" names the script
                    out.append((page.relative_to(ROOT).as_posix(), part))
    return sorted(set(out))


def _argv(line: str) -> list[str]:
    line = re.sub(r"\s+#.*$", "", line)                # a trailing comment
    line = re.sub(r"\s\[--[^\]]*\]", "", line)         # optional parts: [--max-steps N]
    for key, value in PLACEHOLDERS.items():
        line = line.replace(key, value)
    return shlex.split(line)[2:]                         # after "python run.py"


RUN_COMMANDS = _commands("python run.py")


def test_the_pages_show_run_commands():
    pages = {page for page, _ in RUN_COMMANDS}
    assert "README.md" in pages and len(RUN_COMMANDS) >= 20, pages


def _check_config(env: str, profile: str | None, overrides: list[str], method: str | None) -> None:
    if is_system_file(env):  # a system file of the repository (systems/), by its path from the root
        assert (ROOT / env).is_file(), f"no system file {env}"
        env = str(ROOT / env)
    assert env in SYSTEMS or is_system_file(env), f"unknown system {env}"
    base = load_config(env, profile, overrides)
    methods = list(base.methods) if method == "all" else (method or base.method).split(",")
    for m in methods:
        if ":" not in m:  # module:Class names a module of the reader's
            resolve_method(m)
            load_config(env, profile, [*overrides, f"method={m}"])


@pytest.mark.parametrize("page, line", RUN_COMMANDS)
def test_every_documented_run_command_parses_and_names_what_exists(page, line):
    argv = _argv(line)
    command = argv.pop(0) if argv and argv[0] in cli.COMMANDS else "train"
    parser = cli.argparse.ArgumentParser(prog="run.py")
    cli.COMMANDS[command][0](parser)
    try:
        args, extra = parser.parse_known_args(argv)
        overrides = [*getattr(args, "set", []), *cli._config_flags(extra, parser)]
    except SystemExit as e:  # --help exits with 0
        assert e.code == 0, f"{page}: `{line}` does not parse"
        return
    if command == "reproduce":
        protocols = load_protocols()
        assert args.protocol in protocols, f"{page}: unknown protocol {args.protocol}"
        protocol = protocols[args.protocol]
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else []
        assert set(methods) <= set(protocol.methods), f"{page}: {methods} not all in {protocol.methods}"
        plan(protocol, 1, args.max_steps, methods, overrides)
        return
    if command == "evaluate":  # the checkpoint's config is the base; the overrides must be valid keys
        load_config(str(ROOT / args.env) if is_system_file(args.env) else args.env, None, overrides)
        return
    args.set = overrides
    _check_config(args.env, getattr(args, "profile", None), cli._overrides(args), getattr(args, "method", None))


@pytest.mark.parametrize("page, line", _commands("python benchmarks/"))
def test_every_documented_benchmark_script_exists(page, line):
    script = shlex.split(line)[1]
    assert (ROOT / script).is_file(), f"{page}: {script} does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img src="([^"]+)"', text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.relative_to(ROOT)}: broken link {target}"


def test_readme_fits_in_200_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pages_speak_of_the_project_alone(page):
    """Results carry a date, a command and a machine; never how they came about."""
    text = page.read_text()
    assert not re.search(r"(?i)\bsessions?\b|\bcoordinator\b|\bissue \d+|#\d{2,}\b", text), page
    commit = re.search(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", text)
    assert not commit, f"{page.relative_to(ROOT)}: {commit.group(0)} looks like a commit hash"
