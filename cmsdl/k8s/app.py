"""`cmsdl k8s render|submit|status|logs|delete`: run `cmsdl train`, or fan out `cmsdl hits2png|predict`, on Kubernetes.

`cmsdl k8s <action> [k8s settings] [train|hits2png|predict] [overrides]`. Without a command word the pods train:
k8s.*, k8s=<option>, out=, follow= and Hydra's own options configure this command (configs/k8s.yaml) and all
other arguments are `cmsdl train` overrides. After a command word, only k8s.*, k8s=<option> and Hydra's options
are this command's; everything else (out= included) belongs to the command. Overrides are checked locally first.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cmsdl.errors import ConfigError, closest
from cmsdl.io import atomic_write
from cmsdl.k8s.cluster import Cluster
from cmsdl.k8s.fanout import WORKLOADS, check_overrides, render_fanout
from cmsdl.k8s.manifests import check_name, check_namespace, default_name, experiment_of, render, to_yaml

log = logging.getLogger(__name__)
ACTIONS = ("render", "submit", "status", "logs", "delete")
OWN_KEYS = ("k8s", "out", "follow", "action")
TRAIN = "train"


@dataclass(frozen=True)
class Workload:
    """What the pods run: `cmsdl train` (a DDP job) or a fanned-out `cmsdl hits2png|predict`, with its overrides."""

    command: str
    overrides: tuple[str, ...] = ()
    out: str | None = None  # the fanned-out command's composed `out`


def is_k8s_setting(arg: str) -> bool:
    """k8s.*, k8s=<option> and Hydra's own options: this command's, wherever they stand."""
    key = arg.split("=", 1)[0].lstrip("+~")
    return arg.startswith("-") or key.startswith(("hydra.", "hydra/")) or key.split(".", 1)[0] == "k8s"


def is_own(arg: str) -> bool:
    """Whether a command-line argument configures `cmsdl k8s` rather than the training run."""
    return is_k8s_setting(arg) or arg.split("=", 1)[0].lstrip("+~").split(".", 1)[0] in OWN_KEYS


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


def check_workload_overrides(command: str, overrides: list[str]) -> str:
    """Compose configs/<command>.yaml with the overrides and a shard, as every pod will; returns its `out`."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cmsdl.cli import apply_aliases
    from cmsdl.config import compose_run_config

    check_overrides(command, overrides)
    try:
        cfg = compose_run_config(command, [*apply_aliases(command, overrides), "shard.index=0", "shard.count=1"])
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"cmsdl {command}: no value for {', '.join(missing)} (required by "
                              f"configs/{command}.yaml; the pods would fail)")
        return str(cfg.out)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"cmsdl {command} overrides {' '.join(overrides)}: {err}".splitlines()[0]) from None
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()


def job_name(cfg: DictConfig, workload: Workload) -> str:
    if workload.command != TRAIN:
        return cfg.k8s.name or default_name(workload.command)
    return cfg.k8s.name or default_name(experiment_of(list(workload.overrides)))


def render_workload(cfg: DictConfig, workload: Workload) -> list[dict]:
    name = job_name(cfg, workload)
    if workload.command == TRAIN:
        return render(cfg.k8s, list(workload.overrides), name=name)
    return render_fanout(cfg.k8s, workload.command, list(workload.overrides), workload.out, name=name)


def print_status(state: dict) -> None:
    counts = ", ".join(f"{k}={state[k]}" for k in ("active", "succeeded_pods", "failed_pods") if k in state)
    print(f"{state['kind']}/{state['name']}: {', '.join(state['conditions']) or 'Running'}"
          + (f" ({counts})" if counts else ""))
    print(f"{'POD':<56} {'RANK':>4}  {'PHASE':<10} {'RESTARTS':>8}  NODE")
    for pod in state["pods"]:
        print(f"{pod['pod']:<56} {pod['rank']:>4}  {pod['phase'] or '?':<10} {pod['restarts']:>8}  {pod['node']}")


def run(cfg: DictConfig, workload: Workload | list[str]) -> None:
    """Do one action; render and submit build the manifests from cfg.k8s and the workload (or `cmsdl train`
    overrides)."""
    if not isinstance(workload, Workload):
        workload = Workload(TRAIN, tuple(workload))
    action, flavour = cfg.action, cfg.k8s.flavour
    if action in ("render", "submit"):
        manifests = render_workload(cfg, workload)
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


def split_workload(args: list[str]) -> tuple[list[str], str, list[str]]:
    """(this command's arguments, the command the pods run, its overrides) of the arguments after the action."""
    words = [i for i, a in enumerate(args) if a in (TRAIN, *WORKLOADS)]
    if not words:
        own, overrides = split_arguments(args)
        return own, TRAIN, overrides
    at = words[0]
    before, after = args[:at], args[at + 1:]
    return [*before, *filter(is_k8s_setting, after)], args[at], [a for a in after if not is_k8s_setting(a)]


def check_workload(command: str, overrides: list[str]) -> Workload:
    """The overrides checked locally (composed as the pods will compose them), else exit 2 with one line."""
    try:
        if command == TRAIN:
            check_train_overrides(overrides)
            return Workload(TRAIN, tuple(overrides))
        return Workload(command, tuple(overrides), check_workload_overrides(command, overrides))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def parse_arguments(args: list[str]) -> tuple[list[str], Workload]:
    """`cmsdl k8s <action> ...` → (Hydra's arguments for configs/k8s.yaml, the workload with checked overrides)."""
    if args and args[0].startswith("-"):  # --help, --cfg job, ...
        return args, Workload(TRAIN)
    action = args[0] if args else ""
    if action not in ACTIONS:
        hint = closest(action, ACTIONS)
        print(f"error: cmsdl k8s: unknown action {action!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
              + f" (expected one of {', '.join(ACTIONS)})", file=sys.stderr)
        raise SystemExit(2)
    own, command, overrides = split_workload(args[1:])
    if (overrides or command != TRAIN) and action not in ("render", "submit"):
        print(f"error: cmsdl k8s {action}: unexpected arguments {' '.join([command] * (command != TRAIN) + overrides)} "
              "(expected k8s.name=<job> and other k8s.* settings)", file=sys.stderr)
        raise SystemExit(2)
    if action in ("render", "submit"):
        return [f"action={action}", *own], check_workload(command, overrides)
    return [f"action={action}", *own], Workload(command, tuple(overrides))
