"""The `cmsdl` command: `cmsdl <subcommand> [key=value ...]`; each subcommand is a Hydra app."""

from __future__ import annotations

import importlib
import sys

import cmsdl
from cmsdl.errors import closest

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
    "k8s": ("k8s", "run training on Kubernetes: cmsdl k8s render|submit|status|logs|delete ..."),
    "export": ("export", "checkpoint -> ONNX with embedded contract, after a parity check"),
    "predict": ("predict", "batch prediction with an exported model: files -> CSV/JSON"),
    "serve": ("serve", "REST service for a directory of ONNX models (TFaaS successor)"),
}


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
    ]
    return "\n".join(lines)


def hoist_multirun_flag(args: list[str]) -> list[str]:
    """Put -m/--multirun first: Hydra's parser rejects it between overrides, which users write anyway."""
    flags = [a for a in args if a in ("-m", "--multirun")]
    return flags[:1] + [a for a in args if a not in ("-m", "--multirun")]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"cmsdl {cmsdl.__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        hint = closest(name, COMMANDS)
        print(f"cmsdl: unknown command {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
              + f" (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    app = importlib.import_module(f"cmsdl.commands.{COMMANDS[name][0]}").main
    sys.argv = [f"cmsdl-{name}", *hoist_multirun_flag(apply_aliases(name, rest))]
    app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
