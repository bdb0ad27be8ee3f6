"""Where cmsdl's Hydra configs live and how a command becomes a Hydra app."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from cmsdl.errors import CmsdlError, ConfigError
from cmsdl.extras import install_hint
from cmsdl.runs import register_resolvers

log = logging.getLogger(__name__)


def config_dir() -> str:
    """Absolute path of the config tree: the repository's configs/ or, once installed, cmsdl/configs in the wheel."""
    return str(Path(str(resources.files("cmsdl.configs"))).resolve())


def call_naming_extras(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """`fn(cfg)`; a package of an extra that is missing where it is imported (pyarrow for format=parquet, ...) becomes
    a CmsdlError naming the extra and its pip install."""
    try:
        return fn(cfg)
    except ModuleNotFoundError as err:
        hint = install_hint(err.name)
        if hint is None:
            raise
        raise CmsdlError(hint) from None


def hydra_app(config_name: str, prepare_argv: Callable[[list[str]], list[str]] | None = None,
              ) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Turn `fn(cfg)` into a Hydra app on configs/<config_name>.yaml; a CmsdlError, or a missing package of an
    extra, exits 2 with one line.

    `prepare_argv`, where a command has one, rewrites the command-line arguments before Hydra parses them
    (`cmsdl k8s <action> ...` turns its action into `action=<action>`).
    """

    def wrap(fn: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(fn)
        def task(cfg: DictConfig) -> Any:
            try:
                return call_naming_extras(fn, cfg)
            except CmsdlError as err:
                if in_sweep():
                    raise  # a row of the sweep's summary (cmsdl.sweeps.SweepSummary); the other points still run
                print(f"error: {err}", file=sys.stderr)
                raise SystemExit(2) from None

        register_resolvers()
        app = hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(task)
        if prepare_argv is None:
            return app

        @functools.wraps(fn)
        def app_with_argv() -> Any:
            sys.argv = [sys.argv[0], *prepare_argv(sys.argv[1:])]
            return app()

        return app_with_argv

    return wrap


def in_sweep() -> bool:
    """Whether this Hydra job is a point of a `-m` sweep."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and str(HydraConfig.get().mode).endswith("MULTIRUN")


@dataclass(frozen=True)
class ValueRule:
    """What a numeric config value must be: `kind` (int or float) and a range check with its wording."""

    key: str
    kind: type
    check: Callable[[float], bool]
    expected: str


TRAIN_VALUE_RULES: tuple[ValueRule, ...] = (
    ValueRule("seed", int, lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1"),
    ValueRule("trainer.max_epochs", int, lambda v: v >= -1, "an integer >= 1 (or -1: no limit)"),
    ValueRule("trainer.min_epochs", int, lambda v: v >= 0, "an integer >= 0"),
    ValueRule("data.batch_size", int, lambda v: v >= 1, "an integer >= 1"),
    ValueRule("data.eval_batch_size", int, lambda v: v >= 1, "an integer >= 1"),
    ValueRule("model.optimizer.lr", float, lambda v: 0 < v < float("inf"), "a number > 0, e.g. 1e-3"),
    ValueRule("model.optimizer.weight_decay", float, lambda v: 0 <= v < float("inf"), "a number >= 0"),
    ValueRule("model.net.dropout", float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ValueRule("sigterm_check_every_n_batches", int, lambda v: v >= 1, "an integer >= 1"),
)


def check_values(cfg: DictConfig, rules: tuple[ValueRule, ...] = TRAIN_VALUE_RULES) -> None:
    """Refuse a wrong-typed or out-of-range value with one line naming the key, before anything is built."""
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default=None, throw_on_missing=False)
        if value is None:
            continue
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (rule.kind is int and not isinstance(value, int)) or not rule.check(value):
            raise ConfigError(f"{rule.key}: expected {rule.expected}, got {value!r}")


EXAMPLE_TARGETS = {"data": "cmsdl.data.root_table.RootTableDataModule", "model": "cmsdl.models.classifier.Classifier",
                   "trainer": "pytorch_lightning.Trainer"}


def instantiate_logged(cfg: DictConfig, what: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, logging the class it builds; a bad target becomes a ConfigError."""
    target = cfg.get("_target_") if isinstance(cfg, DictConfig) else None
    if not target:
        raise ConfigError(f"{what}: no _target_; expected the class to build, e.g. _target_: "
                          f"{EXAMPLE_TARGETS.get(what, 'package.module.Class')}")
    log.info("building %s <%s>", what, target)
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except hydra.errors.InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, CmsdlError):
            raise cause from None
        raise CmsdlError(f"{what}: cannot build <{target}>: {cause or err}") from None


def instantiate_group(cfg: DictConfig | None, what: str) -> list[Any]:
    """Instantiate every entry with a _target_ in a config group such as callbacks or logger."""
    if not cfg:
        return []
    return [instantiate_logged(entry, f"{what}.{name}") for name, entry in cfg.items() if "_target_" in entry]


def to_plain(cfg: Any) -> Any:
    """A config (or any part of one) as plain, fully resolved Python containers, for checkpoints, JSON and
    manifests; plain values pass through unchanged."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return cfg


def compose_run_config(name: str, overrides: list[str], output_dir: str | Path | None = None) -> DictConfig:
    """Compose configs/<name>.yaml outside a Hydra app (tests, benchmarks, notebooks), as `cmsdl <name>` would.

    Hydra's global state is set for this config; `output_dir` replaces the run directory Hydra would create.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        if output_dir is not None and "paths" in cfg:
            cfg.paths.output_dir = str(output_dir)
    return cfg
