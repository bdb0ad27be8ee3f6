"""Kubernetes fan-out for data preparation and scoring: `cmsdl k8s render|submit hits2png|predict ...`.

One Indexed Job of k8s.fanout.completions pods; pod i runs the same command line as a local run plus
`shard.index=$(JOB_COMPLETION_INDEX) shard.count=<completions>`, so it renders or scores work units i, i + n, ...
into one output tree on the shared outputs claim (k8s.outputs). Both commands are resumable (a retried pod skips
its finished units) and the pod that finds every unit finished writes the merged result (hits2png's manifest.csv,
predict's output file); `merge_only=true` on the same command line merges by hand. Pods get the security
defaults of the training jobs (cmsdl.k8s.manifests): non-root, read-only root file system, limits, no token.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kubernetes import client
from omegaconf import DictConfig

from cmsdl.config import to_plain
from cmsdl.errors import ConfigError, shown
from cmsdl.k8s.manifests import (JOB_API_VERSION, JOB_KIND, check_name, check_namespace, completion_index_env,
                                 container_security, default_name, labels, pod_volumes, resource_requirements,
                                 secure_pod_spec, serialize, user_env)

WORKLOADS = ("hits2png", "predict")
CONTAINER = "cmsdl"
INDEX_VAR = "JOB_COMPLETION_INDEX"  # what Kubernetes calls the pod's index; set explicitly so $(...) expands
SET_PER_POD = ("shard.index", "shard.count", "merge_only")


def fanout_settings(k8s: dict[str, Any]) -> tuple[int, int]:
    """(completions, parallelism) from k8s.fanout, checked: 1 <= parallelism <= completions."""
    fanout = k8s.get("fanout") or {}
    completions, parallelism = fanout.get("completions"), fanout.get("parallelism")
    if isinstance(completions, bool) or not isinstance(completions, int) or completions < 1:
        raise ConfigError(f"k8s.fanout.completions: expected a whole number >= 1 (the number of pods and shards), "
                          f"got {shown(completions)}")
    if parallelism is None:
        return completions, completions
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or not 1 <= parallelism <= completions:
        raise ConfigError(f"k8s.fanout.parallelism: expected null or a whole number from 1 to k8s.fanout.completions "
                          f"({completions}), got {shown(parallelism)}")
    return completions, parallelism


def check_overrides(workload: str, overrides: list[str]) -> None:
    """The keys that cmsdl sets for every pod may not be given on the command line."""
    if workload not in WORKLOADS:
        raise ConfigError(f"cmsdl k8s: {workload!r} cannot be fanned out (expected one of {', '.join(WORKLOADS)})")
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in SET_PER_POD or key == "shard":
            raise ConfigError(f"{key}: set by cmsdl k8s for each pod (shard.index=$({INDEX_VAR}), shard.count = "
                              "k8s.fanout.completions); leave it out")


def check_output_tree(k8s: dict[str, Any], out: Any) -> None:
    """The workload's `out` must lie on the shared outputs claim, where every pod writes into one tree."""
    outputs = k8s.get("outputs") or {}
    if not outputs.get("claim"):
        raise ConfigError("k8s.outputs.claim: fan-out pods write into one output tree on a shared claim; name a "
                          "(ReadWriteMany, for pods on several nodes) PersistentVolumeClaim")
    mount = PurePosixPath(str(outputs.get("mount_path")))
    path = PurePosixPath(str(out))
    if path != mount and mount not in path.parents:
        raise ConfigError(f"out: {out} is not on the outputs claim mounted at {mount} (k8s.outputs.mount_path); "
                          f"the pods write into one tree there, e.g. out={mount}/<name>")


def pod_arguments(workload: str, overrides: list[str], completions: int) -> list[str]:
    """`cmsdl <workload> ...` as run locally, plus this pod's shard (its index is expanded by Kubernetes)."""
    return [workload, *overrides, f"shard.index=$({INDEX_VAR})", f"shard.count={completions}"]


def fanout_container(k8s: dict[str, Any], workload: str, overrides: list[str], completions: int) -> client.V1Container:
    _, mounts = pod_volumes(k8s)
    fanout = k8s.get("fanout") or {}
    gpus = fanout.get("gpus") or 0
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ConfigError(f"k8s.fanout.gpus: expected a whole number >= 0, got {shown(gpus)}")
    env = [client.V1EnvVar(name="HOME", value="/tmp"), client.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
           completion_index_env(INDEX_VAR), *user_env(k8s)]
    return client.V1Container(
        name=CONTAINER, image=fanout.get("image") or k8s["image"], image_pull_policy=k8s["image_pull_policy"], command=["cmsdl"],
        args=pod_arguments(workload, overrides, completions), env=env, volume_mounts=mounts,
        resources=resource_requirements(fanout.get("resources"), gpus, k8s["gpu_resource"], "k8s.fanout.resources"),
        security_context=container_security(),
    )


def fanout_job(k8s: dict[str, Any], workload: str, overrides: list[str], name: str) -> dict[str, Any]:
    """The Indexed Job: completions pods (parallelism at once), one shard each; preemption is not a failure."""
    completions, parallelism = fanout_settings(k8s)
    meta_labels = labels(k8s, name, None, None) | {"app.kubernetes.io/component": workload}
    main = fanout_container(k8s, workload, overrides, completions)
    template = client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=meta_labels),
                                        spec=secure_pod_spec(k8s, main, restart_policy="Never"))
    disrupted = client.V1PodFailurePolicyRule(
        action="Ignore", on_pod_conditions=[client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget",
                                                                                            status="True")])
    spec = client.V1JobSpec(
        completion_mode="Indexed", completions=completions, parallelism=parallelism,
        backoff_limit=int(k8s["backoff_limit"]), ttl_seconds_after_finished=k8s.get("ttl_seconds_after_finished"),
        active_deadline_seconds=k8s.get("active_deadline_seconds"), template=template,
        pod_failure_policy=client.V1PodFailurePolicy(rules=[disrupted]),
    )
    meta = client.V1ObjectMeta(name=name, namespace=k8s["namespace"], labels=meta_labels)
    return serialize(client.V1Job(api_version=JOB_API_VERSION, kind=JOB_KIND, metadata=meta, spec=spec))


def render_fanout(k8s_cfg: DictConfig | dict, workload: str, overrides: list[str], out: Any,
                  name: str | None = None) -> list[dict[str, Any]]:
    """The manifests of one fan-out run of `cmsdl <workload> <overrides>`, whose composed `out` is `out`."""
    k8s = dict(to_plain(k8s_cfg))
    check_overrides(workload, overrides)
    check_namespace(k8s.get("namespace"))
    check_output_tree(k8s, out)
    name = check_name(name or k8s.get("name") or default_name(workload))
    return [fanout_job(k8s, workload, overrides, name)]
