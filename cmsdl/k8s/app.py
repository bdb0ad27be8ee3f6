"""`cmsdl k8s render|submit|status|logs|delete`: run `cmsdl train` on a Kubernetes cluster.

Arguments after the action are split: k8s.*, k8s=<option>, out=, follow= and Hydra's own options configure
this command (configs/k8s.yaml); all others are `cmsdl train` overrides for the pods, checked locally first.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from cmsdl.errors import ConfigError, closest
from cmsdl.io import atomic_write
from cmsdl.k8s.cluster import Cluster
from cmsdl.k8s.manifests import check_name, check_namespace, default_name, experiment_of, render, to_yaml

log = logging.getLogger(__name__)
ACTIONS = ("render", "submit", "status", "logs", "delete")
OWN_KEYS = ("k8s", "out", "follow", "action")


def is_own(arg: str) -> bool:
    """Whether a command-line argument configures `cmsdl k8s` rather than the training run."""
    key = arg.split("=", 1)[0].lstrip("+~")
    return arg.startswith("-") or key.startswith(("hydra.", "hydra/")) or key.split(".", 1)[0] in OWN_KEYS


def split_arguments(args: list[str]) -> tuple[list[str], list[str]]:
    """(`cmsdl k8s` arguments, `cmsdl train` overrides)."""
    return [a for a in args if is_own(a)], [a for a in args if not is_own(a)]


def check_train_overrides(overrides: list[str]) -> None:
    """Compose the training config here, so that a typo fails now rather than in a pod on the cluster."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cmsdl.config import compose_run_config

    try:
        compose_run_config("train", [o for o in overrides if not o.startswith(("run_name=", "resume="))])
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"cmsdl train overrides {' '.join(overrides)}: {err}".splitlines()[0]) from None
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()


def job_name(cfg: DictConfig, train_overrides: list[str]) -> str:
    return cfg.k8s.name or default_name(experiment_of(train_overrides))


def print_status(state: dict) -> None:
    counts = ", ".join(f"{k}={state[k]}" for k in ("active", "succeeded_pods", "failed_pods") if k in state)
    print(f"{state['kind']}/{state['name']}: {', '.join(state['conditions']) or 'Running'}"
          + (f" ({counts})" if counts else ""))
    print(f"{'POD':<56} {'RANK':>4}  {'PHASE':<10} {'RESTARTS':>8}  NODE")
    for pod in state["pods"]:
        print(f"{pod['pod']:<56} {pod['rank']:>4}  {pod['phase'] or '?':<10} {pod['restarts']:>8}  {pod['node']}")


def run(cfg: DictConfig, train_overrides: list[str]) -> None:
    """Do one action; render and submit build the manifests from cfg.k8s and the `cmsdl train` overrides."""
    action, flavour = cfg.action, cfg.k8s.flavour
    if action in ("render", "submit"):
        manifests = render(cfg.k8s, train_overrides, name=job_name(cfg, train_overrides))
        if action == "render":
            text = to_yaml(manifests)
            if cfg.out:
                with atomic_write(Path(cfg.out)) as handle:
                    handle.write(text)
                print(f"wrote {len(manifests)} manifests to {cfg.out}; apply with `kubectl apply -f {cfg.out}`")
            else:
                print(text, end="")
            return
        name = manifests[-1]["metadata"]["name"]
        created = Cluster(cfg.k8s.namespace).create(manifests)
        print(f"submitted {', '.join(created)} to namespace {cfg.k8s.namespace}")
        print(f"follow it: cmsdl k8s status k8s.name={name} | cmsdl k8s logs k8s.name={name}")
        return
    if not cfg.k8s.name:
        raise ConfigError(f"k8s.name: `cmsdl k8s {action}` needs the job's name (k8s.name=<job>)")
    check_name(cfg.k8s.name)
    cluster = Cluster(check_namespace(cfg.k8s.namespace))
    if action == "status":
        print_status(cluster.status(cfg.k8s.name, flavour))
    elif action == "logs":
        for line in cluster.logs(cfg.k8s.name, follow=bool(cfg.follow)):
            print(line, flush=True)
    else:
        print(f"deleted {', '.join(cluster.delete(cfg.k8s.name, flavour))} in namespace {cfg.k8s.namespace}")


def parse_arguments(args: list[str]) -> tuple[list[str], list[str]]:
    """`cmsdl k8s <action> ...` → (Hydra's arguments for configs/k8s.yaml, the `cmsdl train` overrides, checked)."""
    if args and args[0].startswith("-"):  # --help, --cfg job, ...
        return args, []
    action = args[0] if args else ""
    if action not in ACTIONS:
        hint = closest(action, ACTIONS)
        print(f"error: cmsdl k8s: unknown action {action!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
              + f" (expected one of {', '.join(ACTIONS)})", file=sys.stderr)
        raise SystemExit(2)
    own, train_overrides = split_arguments(args[1:])
    if train_overrides and action not in ("render", "submit"):
        print(f"error: cmsdl k8s {action}: unexpected arguments {' '.join(train_overrides)} "
              "(expected k8s.name=<job> and other k8s.* settings)", file=sys.stderr)
        raise SystemExit(2)
    if action in ("render", "submit"):
        try:
            check_train_overrides(train_overrides)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    return [f"action={action}", *own], train_overrides
