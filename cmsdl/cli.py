"""The `cmsdl` command: `cmsdl <subcommand> [key=value ...]`; each subcommand is a Hydra app.

`--help`, shell completion and the check for a missing extra are answered here, before a command module loads, so
they never wait for torch (tests/test_cli_speed.py)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import cmsdl
from cmsdl.errors import CmsdlError, closest
from cmsdl.extras import missing_extra

# subcommand → (module of cmsdl.commands whose `main` is the Hydra app, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model: cmsdl train experiment=workflow_actions trainer=gpu"),
    "eval": ("eval", "evaluate a checkpoint on a split, write metrics and plots: cmsdl eval ckpt=..."),
    "simulate": ("simulate", "toy CMS tracker: simulate jpsi/qcd/higgs events into ROOT files of hits"),
    "simulate-top": ("simulate_top", "toy NanoAOD: all-hadronic ttbar signal and QCD multijet background (ROOT)"),
    "hits2png": ("hits2png", "render ROOT hits into PNG event images + manifest (chunked, parallel, resumable)"),
    "simulate-workflows": ("simulate_workflows", "write synthetic CMS workflows with errors and actions (JSON)"),
    "cluster-workflows": ("cluster_workflows", "k-means clusters of workflows with similar errors"),
    "simulate-popularity": ("simulate_popularity", "write synthetic weekly dataset-access records per site (CSV)"),
    "popularity": ("popularity", "rolling-window popularity prediction: DNN and baselines, AUC/FPR/FNR per week"),
    "cache-sim": ("cache_sim", "site cache simulation: LRU, OPT, PPC, PPC100, SDC hit-rate curves"),
    "simulate-transfers": ("simulate_transfers",
                           "write synthetic FTS-like transfer logs with latency classes (JSON records)"),
    "k8s": ("k8s", "train, or fan out hits2png/predict, on Kubernetes: cmsdl k8s render|submit|status|logs|delete"),
    "export": ("export", "checkpoint -> ONNX with embedded contract, after a parity check"),
    "predict": ("predict", "batch prediction with an exported model: files -> CSV/JSON"),
    "serve": ("serve", "REST service for a directory of ONNX models (TFaaS successor)"),
}


HELP_FLAGS = ("-h", "--help")
CONFIG_ONLY_FLAGS = ("-c", "--cfg", "-i", "--info", "--hydra-help")  # Hydra prints and runs nothing: no extra needed
COMPLETION_FLAGS = ("-sc", "--shell-completion")
COMPLETING_COMMAND = "predict"  # any command's Hydra app prints the completion script; this one needs no extra


# Keys that would clash with a config group of the same name (e.g. `model`), renamed before Hydra sees them.
KEY_ALIASES: dict[str, dict[str, str]] = {"predict": {"model": "onnx"}}


def apply_aliases(command: str, args: list[str]) -> list[str]:
    """`cmsdl predict model=x.onnx` → `onnx=x.onnx`: `model` is a config group, so Hydra would read a group choice."""
    aliases = KEY_ALIASES.get(command, {})
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        out.append(f"{aliases[key]}={value}" if sep and key in aliases else arg)
    return out


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        f"cmsdl {cmsdl.__version__}: deep learning for CMS computing and physics",
        "",
        "usage: cmsdl <command> [key=value ...] [--help] [-m]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()),
        "",
        "Every command is a Hydra app: `cmsdl <command> --help` shows its config, `--cfg job` the composed one.",
        "Shell completion (bash, zsh with bashcompinit): eval \"$(cmsdl -sc install=bash)\"",
    ]
    return "\n".join(lines)


def hoist_multirun_flag(args: list[str]) -> list[str]:
    """Put -m/--multirun first: Hydra's parser rejects it between overrides, which users write anyway."""
    flags = [a for a in args if a in ("-m", "--multirun")]
    return flags[:1] + [a for a in args if a not in ("-m", "--multirun")]


def config_name(command: str) -> str:
    """The file configs/<name>.yaml of a subcommand (the module name of cmsdl.commands)."""
    return COMMANDS[command][0]


def print_command_help(command: str, args: list[str]) -> int:
    """`cmsdl <command> [overrides] --help`: the composed config with its comments, before any command module loads."""
    from cmsdl.config import config_dir
    from cmsdl.config_help import command_help
    from cmsdl.runs import register_resolvers

    register_resolvers()
    overrides = [a for a in apply_aliases(command, args) if "=" in a and not a.startswith("-")]
    try:
        print(command_help(Path(config_dir()), config_name(command), overrides))
    except CmsdlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run_app(command: str, argv: list[str], program: str | None = None) -> None:
    """Run the Hydra app of `command` with `argv` as its command line (`program`: the name Hydra sees, which its
    completion scripts call back)."""
    app = importlib.import_module(f"cmsdl.commands.{config_name(command)}").main
    sys.argv = [program or f"cmsdl-{command}", *argv]
    app()


def shell_completion(args: list[str]) -> int:
    """`cmsdl -sc install=bash|zsh|fish` prints Hydra's completion script for `cmsdl`; `cmsdl -sc query=<shell>`
    (called by that script with COMP_LINE set) completes the command name, then hands the rest of the line, without
    the command name, to that command's Hydra app."""
    if not any(a.startswith("query=") for a in args):
        run_app(COMPLETING_COMMAND, ["-sc", *args], program="cmsdl")
        return 0
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) < 2 or (len(words) == 2 and not line.endswith(" ")):
        typed = words[1] if len(words) == 2 else ""
        separator = "\n" if "query=fish" in args else " "  # as Hydra's fish and bash plugins print theirs
        print(separator.join(name for name in COMMANDS if name.startswith(typed)))
        return 0
    command = words[1]
    if command not in COMMANDS:
        return 0
    rest = " ".join(apply_aliases(command, words[2:]))
    os.environ["COMP_LINE"] = f"cmsdl {rest}" + (" " if line.endswith(" ") and rest else "")
    run_app(command, ["-sc", *args], program="cmsdl")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"cmsdl {cmsdl.__version__}")
        return 0
    if args[0] in COMPLETION_FLAGS:
        return shell_completion(args[1:])
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        hint = closest(name, COMMANDS)
        print(f"cmsdl: unknown command {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
              + f" (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    if any(flag in rest for flag in HELP_FLAGS):
        return print_command_help(name, rest)
    problem = None if any(flag in rest for flag in CONFIG_ONLY_FLAGS) else missing_extra(name)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    run_app(name, hoist_multirun_flag(apply_aliases(name, rest)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
