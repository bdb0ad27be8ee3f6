"""Which pip extra brings what: the commands that need one, and a one-line install hint for an optional module that is
missing. Must stay import-free (the CLI reads it before anything else loads); pyproject.toml lists the packages."""

from __future__ import annotations

import importlib.util

# extra → (its name in messages, modules its packages install)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("training", ("torch", "torchvision", "pytorch_lightning", "torchmetrics", "onnx", "sklearn",
                           "matplotlib", "pyarrow")),
    "tools": ("tools", ("sklearn", "matplotlib")),
    "parquet": ("parquet", ("pyarrow",)),
    "remote": ("remote", ("XRootD", "fsspec_xrootd", "aiohttp")),
    "k8s": ("k8s", ("kubernetes",)),
    "tracking": ("tracking", ("mlflow", "tensorboard")),
    "spark": ("spark", ("pyspark",)),
    "optuna": ("optuna", ("optuna",)),
    "xgboost": ("xgboost", ("xgboost",)),
}
# subcommand → the extra it needs beyond the base install (predict, serve, hits2png and the simulators need none)
COMMAND_EXTRAS: dict[str, str] = {"train": "train", "eval": "train", "export": "train", "popularity": "train",
                                  "cluster-workflows": "tools", "cache-sim": "tools", "k8s": "k8s"}
# a module imported only where it is used → the smallest extra that brings it (later entries win)
MODULE_EXTRAS: dict[str, str] = {module: extra for extra, (_, modules) in EXTRAS.items() for module in modules}


def missing_extra(command: str) -> str | None:
    """One line naming the extra that `command` needs and how to install it, if one of its modules is missing."""
    extra = COMMAND_EXTRAS.get(command)
    if extra is None:
        return None
    title, modules = EXTRAS[extra]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return f"cmsdl {command} needs the {title} extra: pip install 'cmsdl[{extra}]' ({', '.join(missing)} not installed)"


def install_hint(module: str | None) -> str | None:
    """For a missing optional module (ModuleNotFoundError.name): one line saying which extra installs it."""
    name = next((n for n in ((module or "").split(".")[0], module) if n in MODULE_EXTRAS), None)
    if name is None:
        return None
    extra = MODULE_EXTRAS[name]
    return f"{name} is not installed; it comes with the {EXTRAS[extra][0]} extra: pip install 'cmsdl[{extra}]'"
