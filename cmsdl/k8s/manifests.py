"""Kubernetes manifests for `cmsdl train`: an Indexed Job + headless Service, or a Kubeflow PyTorchJob.

Objects are built bottom-up from the client's typed models (V1Container → V1PodSpec → V1JobSpec → V1Job)
and serialised with the client's own serialiser; the PyTorchJob (a custom resource) is a plain dict.
Settings are checked here against the Kubernetes grammars (names, namespace, label keys and values, resource
quantities), so that a bad value is one ConfigError line naming the k8s.* key, not a rejection by the server.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from kubernetes import client
from omegaconf import DictConfig

from cmsdl.config import to_plain
from cmsdl.errors import ConfigError, shown

JOB_API_VERSION = "batch/v1"
JOB_KIND = "Job"
SERVICE_API_VERSION = "v1"
SERVICE_KIND = "Service"
PYTORCHJOB_GROUP = "kubeflow.org"
PYTORCHJOB_VERSION = "v1"
PYTORCHJOB_API_VERSION = f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}"
PYTORCHJOB_KIND = "PyTorchJob"
PYTORCHJOB_PLURAL = "pytorchjobs"
FLAVOURS = ("indexed", "pytorchjob")

CONTAINER = "pytorch"  # the training operator requires this container name; the Indexed Job uses it too
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
LABEL_PREFIX = "cmsdl.io"
LABEL_JOB = f"{LABEL_PREFIX}/job"
LABEL_EXPERIMENT = f"{LABEL_PREFIX}/experiment"
LABEL_SWEEP = f"{LABEL_PREFIX}/sweep"
MAX_NAME = 52  # Indexed Job pods are named <job>-<index>-<5 random chars> and must stay a DNS label
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # RFC 1123 label, at most 63 characters
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")  # at most 253
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")  # a label key's name, or a value; at most 63
# Kubernetes resource quantity (apimachinery resource.Quantity): number, then a binary, decimal or exponent suffix
_QUANTITY = re.compile(r"\+?(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?")
_SUFFIX_SCALE = {"n": Decimal(10) ** -9, "u": Decimal(10) ** -6, "m": Decimal(10) ** -3, "k": Decimal(10) ** 3,
                 **{p: Decimal(10) ** (3 * (i + 2)) for i, p in enumerate("MGTPE")},
                 **{f"{p}i": Decimal(2) ** (10 * (i + 1)) for i, p in enumerate("KMGTPE")}}
MAX_QUANTITY = Decimal(2) ** 63 - 1  # the API server refuses larger values
# Label keys that cmsdl sets (the Service selects the pods by cmsdl.io/job), and the prefixes Kubernetes and the
# training operator own (kubernetes.io, k8s.io and their subdomains; app.kubernetes.io/* is for users)
RESERVED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component")
RESERVED_DOMAINS = (LABEL_PREFIX, "kubernetes.io", "k8s.io", "kubeflow.org")
_SERIALIZER = client.ApiClient()


def label_value(text: str) -> str:
    """`text` as a valid label value: at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text))[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def check_name(name: str) -> str:
    """A job name usable for the Job, its Service and its pods' host names, else a ConfigError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ConfigError(f"k8s.name: {shown(name)} is not a valid job name (expected lowercase letters, digits and "
                          f"'-', starting with a letter, at most {MAX_NAME} characters)")
    return name


def check_namespace(namespace: Any) -> str:
    """A namespace name (an RFC 1123 DNS label), else a ConfigError."""
    if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace) or len(namespace) > 63:
        raise ConfigError(f"k8s.namespace: {shown(namespace)} is not a valid namespace (expected lowercase letters, "
                          "digits and '-', starting and ending with a letter or digit, at most 63 characters)")
    return namespace


def is_qualified_name(key: str) -> bool:
    """Kubernetes' qualified-name grammar (label keys, resource names): [DNS subdomain/]name, name <= 63."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def is_reserved_label(key: str) -> bool:
    """Whether a label key belongs to cmsdl, Kubernetes or the training operator rather than to the user."""
    domain = key.rpartition("/")[0].lower()
    if key in RESERVED_LABELS or domain == "app.kubernetes.io":
        return key in RESERVED_LABELS
    return any(domain == d or domain.endswith("." + d) for d in RESERVED_DOMAINS)


def check_user_labels(given: Any) -> dict[str, str]:
    """The user's k8s.labels as valid label keys and values; a reserved or malformed one is a ConfigError."""
    if not given:
        return {}
    if not isinstance(given, dict):
        raise ConfigError(f"k8s.labels: expected a mapping of label keys to values, got {shown(given)}")
    out = {}
    for key, value in given.items():
        key = str(key)
        if is_reserved_label(key):
            raise ConfigError(f"k8s.labels: {shown(key)} is reserved (cmsdl sets {LABEL_PREFIX}/* and "
                              f"{', '.join(RESERVED_LABELS)}; Kubernetes owns kubernetes.io/ and k8s.io/)")
        if not is_qualified_name(key):
            raise ConfigError(f"k8s.labels: {shown(key)} is not a valid label key (expected [prefix/]name: a name "
                              "of at most 63 letters, digits, '-', '_', '.', alphanumeric at both ends, and an "
                              "optional DNS-subdomain prefix)")
        text = _scalar_text(value)
        if text is None or len(text) > 63 or not (text == "" or _LABEL_NAME.fullmatch(text)):
            raise ConfigError(f"k8s.labels.{key}: {shown(value)} is not a valid label value (expected at most 63 "
                              "letters, digits, '-', '_', '.', alphanumeric at both ends)")
        out[key] = text
    return out


def _scalar_text(value: Any) -> str | None:
    """A YAML scalar as the text Kubernetes sees (booleans lowercase); None for mappings, lists and null."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, (str, int, float)) else None


def check_quantity(key: str, value: Any) -> str:
    """A Kubernetes resource quantity (`8`, `0.5`, `500m`, `32Gi`, `1e3`) as text, else a ConfigError naming `key`."""
    text = _scalar_text(value) if not isinstance(value, bool) else None
    amount = quantity_value(text) if text is not None else None
    if amount is None or amount > MAX_QUANTITY:
        raise ConfigError(f"{key}: {shown(value)} is not a Kubernetes quantity (expected a non-negative number "
                          "below 2**63 with an optional suffix m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or "
                          "e<exponent>, e.g. 8, 500m, 32Gi)")
    return text


def quantity_value(text: str) -> Decimal | None:
    """The value of a quantity in base units (cores, bytes), or None when `text` is not one."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        exponent = int(suffix[1:]) if len(suffix) <= 5 else (-99 if suffix[1] == "-" else 99)
        return number.scaleb(max(min(exponent, 99), -99))  # beyond ±99 the value is out of range or 0 anyway
    return number * _SUFFIX_SCALE.get(suffix, Decimal(1))


def experiment_of(train_overrides: list[str]) -> str | None:
    """The experiment chosen on the `cmsdl train` command line, if any."""
    chosen = [o.split("=", 1)[1] for o in train_overrides if o.startswith(("experiment=", "+experiment="))]
    return chosen[-1] if chosen else None


def default_name(experiment: str | None, now: datetime | None = None) -> str:
    """cmsdl-<experiment>-<YYYYmmdd-HHMMSS>, shortened to a valid job name."""
    stem = re.sub(r"[^a-z0-9]+", "-", (experiment or "train").lower()).strip("-") or "train"
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"cmsdl-{stem[:MAX_NAME - 22].strip('-')}-{stamp}"


def labels(k8s: dict[str, Any], name: str, experiment: str | None, sweep: str | None) -> dict[str, str]:
    """Labels on every object and pod: what made it, which job, experiment and sweep."""
    out = {"app.kubernetes.io/name": "cmsdl", "app.kubernetes.io/component": "train", LABEL_JOB: name}
    if experiment:
        out[LABEL_EXPERIMENT] = label_value(experiment)
    if sweep:
        out[LABEL_SWEEP] = label_value(sweep)
    return check_user_labels(k8s.get("labels")) | out


def train_arguments(k8s: dict[str, Any], name: str, train_overrides: list[str]) -> list[str]:
    """`cmsdl train` overrides run in the pods: the user's, plus trainer, paths, a fixed run_name and resume=true.

    The fixed run_name and resume=true make a restarted pod (or a resubmitted job of the same name) continue
    from <outputs>/train/runs/<name>/checkpoints/last.ckpt instead of starting over.
    """
    given = {o.split("=", 1)[0].lstrip("+~") for o in train_overrides}
    extra = []
    if "trainer" not in given and k8s.get("trainer"):
        extra.append(f"trainer={k8s['trainer']}")
    if int(k8s["gpus_per_node"]) == 0 and "trainer.accelerator" not in given:
        extra.append("trainer.accelerator=cpu")  # CPU pods: DDP over gloo
    if (k8s.get("data") or {}).get("claim") and "paths.data_dir" not in given:
        extra.append(f"paths.data_dir={k8s['data']['mount_path']}")
    if (k8s.get("outputs") or {}).get("claim") and "paths.log_dir" not in given:
        extra.append(f"paths.log_dir={k8s['outputs']['mount_path']}")
    kept = [o for o in train_overrides if o.split("=", 1)[0] not in ("run_name", "resume")]
    return [*kept, *extra, f"run_name={name}", "resume=true"]


def processes_per_pod(k8s: dict[str, Any]) -> int:
    return max(int(k8s["gpus_per_node"]), 1)


def torchrun_command(k8s: dict[str, Any], flavour: str) -> list[str]:
    """torchrun with one node per pod; the Indexed Job gives the rendezvous, the training operator sets PET_*."""
    if flavour == "pytorchjob":
        return ["torchrun"]
    return ["torchrun", f"--nnodes={k8s['nodes']}", f"--nproc-per-node={processes_per_pod(k8s)}",
            "--node-rank=$(NODE_RANK)", "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"]


def _quantities(resources: Any, kind: str, where: str) -> dict[str, str]:
    """<where>.<kind> (requests or limits) checked: resource names and quantities."""
    given = (resources or {}).get(kind) or {}
    out = {}
    for name, value in given.items():
        if value is None:
            continue
        if not is_qualified_name(str(name)):
            raise ConfigError(f"{where}.{kind}: {shown(name)} is not a valid resource name (e.g. cpu, memory, "
                              "ephemeral-storage, nvidia.com/gpu)")
        out[str(name)] = check_quantity(f"{where}.{kind}.{name}", value)
    return out


def resource_requirements(resources: Any, gpus: int, gpu_resource: str,
                          where: str = "k8s.resources") -> client.V1ResourceRequirements:
    """Requests and limits from `resources` (the config at `where`), cpu and memory limits required, plus `gpus`."""
    requests, limits = _quantities(resources, "requests", where), _quantities(resources, "limits", where)
    for key in ("cpu", "memory"):
        if key not in limits:
            raise ConfigError(f"{where}.limits.{key}: must be set (every pod runs with resource limits)")
    for key, request in requests.items():
        if key in limits and quantity_value(request) > quantity_value(limits[key]):
            raise ConfigError(f"{where}.requests.{key}: {request} is more than the limit {limits[key]} "
                              f"({where}.limits.{key})")
    if int(gpus) > 0:
        limits[gpu_resource] = str(gpus)
        requests[gpu_resource] = str(gpus)
    return client.V1ResourceRequirements(requests=requests or None, limits=limits)


def _resources(k8s: dict[str, Any]) -> client.V1ResourceRequirements:
    return resource_requirements(k8s.get("resources"), k8s["gpus_per_node"], k8s["gpu_resource"])


def completion_index_env(var: str) -> client.V1EnvVar:
    """`var` set to the pod's index in its Indexed Job (the job-completion-index annotation)."""
    index = client.V1ObjectFieldSelector(field_path=f"metadata.annotations['{COMPLETION_INDEX}']")
    return client.V1EnvVar(name=var, value_from=client.V1EnvVarSource(field_ref=index))


def _env(k8s: dict[str, Any], name: str, flavour: str) -> list[client.V1EnvVar]:
    env = [client.V1EnvVar(name="HOME", value="/tmp"), client.V1EnvVar(name="PYTHONUNBUFFERED", value="1")]
    if flavour == "indexed":
        env += [
            completion_index_env("NODE_RANK"),
            client.V1EnvVar(name="MASTER_ADDR", value=f"{name}-0.{name}"),
            client.V1EnvVar(name="MASTER_PORT", value=str(k8s["master_port"])),
        ]
    return env + user_env(k8s)


def user_env(k8s: dict[str, Any]) -> list[client.V1EnvVar]:
    """k8s.env as plain variables and k8s.secret_env as references to Secret keys (never their values)."""
    env = [client.V1EnvVar(name=str(k), value=str(v)) for k, v in (k8s.get("env") or {}).items()]
    for var, ref in (k8s.get("secret_env") or {}).items():
        if not isinstance(ref, dict) or not ref.get("secret") or not ref.get("key"):
            raise ConfigError(f"k8s.secret_env.{var}: expected {{secret: <secret name>, key: <key>}}, got {ref!r}")
        selector = client.V1SecretKeySelector(name=ref["secret"], key=ref["key"])
        env.append(client.V1EnvVar(name=str(var), value_from=client.V1EnvVarSource(secret_key_ref=selector)))
    return env


def pod_volumes(k8s: dict[str, Any]) -> tuple[list[client.V1Volume], list[client.V1VolumeMount]]:
    """/dev/shm and /tmp as size-limited emptyDirs (the root file system is read-only), data and outputs claims."""
    shm_size = check_quantity("k8s.shm_size", k8s.get("shm_size"))
    tmp_size = check_quantity("k8s.tmp_size", k8s.get("tmp_size"))
    volumes = [
        client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory", size_limit=shm_size)),
        client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource(size_limit=tmp_size)),
    ]
    mounts = [client.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
              client.V1VolumeMount(name="tmp", mount_path="/tmp")]
    for key, read_only in (("data", True), ("outputs", False)):
        spec = k8s.get(key) or {}
        if spec.get("claim"):
            claim = client.V1PersistentVolumeClaimVolumeSource(claim_name=spec["claim"], read_only=read_only)
            volumes.append(client.V1Volume(name=key, persistent_volume_claim=claim))
            mounts.append(client.V1VolumeMount(name=key, mount_path=spec["mount_path"], read_only=read_only))
    return volumes, mounts


def container(k8s: dict[str, Any], name: str, train_overrides: list[str], flavour: str) -> client.V1Container:
    """The training container: torchrun → `cmsdl train`, non-root, no privilege escalation, limits set."""
    _, mounts = pod_volumes(k8s)
    security = container_security()
    ports = [client.V1ContainerPort(name="rendezvous", container_port=int(k8s["master_port"]))]
    return client.V1Container(
        name=CONTAINER, image=k8s["image"], image_pull_policy=k8s["image_pull_policy"],
        command=torchrun_command(k8s, flavour),
        args=["-m", "cmsdl.cli", "train", *train_arguments(k8s, name, train_overrides)],
        env=_env(k8s, name, flavour), resources=_resources(k8s), volume_mounts=mounts, ports=ports,
        security_context=security,
    )


def container_security() -> client.V1SecurityContext:
    """Every cmsdl container: non-root, read-only root file system, no privilege escalation, no capabilities."""
    return client.V1SecurityContext(allow_privilege_escalation=False, read_only_root_filesystem=True,
                                    run_as_non_root=True, capabilities=client.V1Capabilities(drop=["ALL"]))


def pod_spec(k8s: dict[str, Any], name: str, train_overrides: list[str], flavour: str,
             restart_policy: str) -> client.V1PodSpec:
    return secure_pod_spec(k8s, container(k8s, name, train_overrides, flavour), restart_policy,
                           subdomain=name if flavour == "indexed" else None)


def secure_pod_spec(k8s: dict[str, Any], main: client.V1Container, restart_policy: str,
                    subdomain: str | None = None) -> client.V1PodSpec:
    """A pod running `main` as k8s.run_as_user (never root), with the volumes, scheduling and pull settings of k8s."""
    volumes, _ = pod_volumes(k8s)
    uid = int(k8s["run_as_user"])
    if uid == 0:
        raise ConfigError("k8s.run_as_user: 0 (root) is not allowed; pods run as a non-root user")
    security = client.V1PodSecurityContext(run_as_non_root=True, run_as_user=uid, run_as_group=uid, fs_group=uid,
                                           seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))
    tolerations = [client.V1Toleration(**_snake(t)) for t in (k8s.get("tolerations") or [])]
    return client.V1PodSpec(
        containers=[main],
        restart_policy=restart_policy, volumes=volumes, security_context=security,
        node_selector={str(k): str(v) for k, v in (k8s.get("node_selector") or {}).items()} or None,
        tolerations=tolerations or None, priority_class_name=k8s.get("priority_class"),
        service_account_name=k8s.get("service_account"),
        automount_service_account_token=bool(k8s.get("service_account")),
        image_pull_secrets=[client.V1LocalObjectReference(name=s) for s in (k8s.get("image_pull_secrets") or [])] or None,
        termination_grace_period_seconds=int(k8s["termination_grace_seconds"]),
        subdomain=subdomain,
    )


def _snake(mapping: dict[str, Any]) -> dict[str, Any]:
    """camelCase keys (as in kubectl manifests) → the client's snake_case keyword arguments."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in mapping.items()}


def indexed_job(k8s: dict[str, Any], name: str, train_overrides: list[str], meta_labels: dict[str, str]) -> client.V1Job:
    """One pod per node (parallelism = completions = nodes); pod index = node rank; preemption is not a failure."""
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=meta_labels),
        spec=pod_spec(k8s, name, train_overrides, "indexed", restart_policy="Never"),
    )
    disrupted = client.V1PodFailurePolicyRule(
        action="Ignore", on_pod_conditions=[client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget",
                                                                                            status="True")])
    spec = client.V1JobSpec(
        completion_mode="Indexed", completions=int(k8s["nodes"]), parallelism=int(k8s["nodes"]),
        backoff_limit=int(k8s["backoff_limit"]), ttl_seconds_after_finished=k8s.get("ttl_seconds_after_finished"),
        active_deadline_seconds=k8s.get("active_deadline_seconds"), template=template,
        pod_failure_policy=client.V1PodFailurePolicy(rules=[disrupted]),
    )
    meta = client.V1ObjectMeta(name=name, namespace=k8s["namespace"], labels=meta_labels)
    return client.V1Job(api_version=JOB_API_VERSION, kind=JOB_KIND, metadata=meta, spec=spec)


def headless_service(k8s: dict[str, Any], name: str, meta_labels: dict[str, str]) -> client.V1Service:
    """DNS names <job>-<index>.<job> for the pods, before they are ready (torchrun rendezvous at index 0)."""
    spec = client.V1ServiceSpec(cluster_ip="None", selector={LABEL_JOB: name}, publish_not_ready_addresses=True,
                                ports=[client.V1ServicePort(name="rendezvous", port=int(k8s["master_port"]),
                                                            target_port=int(k8s["master_port"]))])
    meta = client.V1ObjectMeta(name=name, namespace=k8s["namespace"], labels=meta_labels)
    return client.V1Service(api_version=SERVICE_API_VERSION, kind=SERVICE_KIND, metadata=meta, spec=spec)


def pytorch_job(k8s: dict[str, Any], name: str, train_overrides: list[str], meta_labels: dict[str, str]) -> dict:
    """Kubeflow PyTorchJob: one Master and nodes-1 Workers; the operator sets PET_* for torchrun."""
    def replica(count: int) -> dict[str, Any]:
        template = client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels=meta_labels),
            spec=pod_spec(k8s, name, train_overrides, "pytorchjob", restart_policy="OnFailure"),
        )
        return {"replicas": count, "restartPolicy": "OnFailure", "template": serialize(template)}

    replicas = {"Master": replica(1)}
    if int(k8s["nodes"]) > 1:
        replicas["Worker"] = replica(int(k8s["nodes"]) - 1)
    run_policy = {"cleanPodPolicy": "None", "backoffLimit": int(k8s["backoff_limit"]),
                  "ttlSecondsAfterFinished": k8s.get("ttl_seconds_after_finished"),
                  "activeDeadlineSeconds": k8s.get("active_deadline_seconds")}
    return {
        "apiVersion": PYTORCHJOB_API_VERSION, "kind": PYTORCHJOB_KIND,
        "metadata": {"name": name, "namespace": k8s["namespace"], "labels": meta_labels},
        "spec": {"nprocPerNode": str(processes_per_pod(k8s)), "pytorchReplicaSpecs": replicas,
                 "runPolicy": {k: v for k, v in run_policy.items() if v is not None}},
    }


def serialize(obj: Any) -> Any:
    """A typed client object as the JSON-ready dict the API server accepts (camelCase, no nulls)."""
    return _SERIALIZER.sanitize_for_serialization(obj)


def render(k8s_cfg: DictConfig | dict, train_overrides: list[str], name: str | None = None,
           sweep: str | None = None) -> list[dict[str, Any]]:
    """The manifests of one training job, in the order they are created."""
    k8s = dict(to_plain(k8s_cfg))
    if k8s.get("flavour") not in FLAVOURS:
        raise ConfigError(f"k8s.flavour: {k8s.get('flavour')!r} is not one of {', '.join(FLAVOURS)}")
    for key in ("nodes", "gpus_per_node"):
        if not isinstance(k8s.get(key), int) or k8s[key] < (1 if key == "nodes" else 0):
            raise ConfigError(f"k8s.{key}: expected a whole number >= {1 if key == 'nodes' else 0}, got {k8s.get(key)!r}")
    check_namespace(k8s.get("namespace"))
    experiment = experiment_of(train_overrides)
    name = check_name(name or k8s.get("name") or default_name(experiment))
    meta_labels = labels(k8s, name, experiment, sweep)
    if k8s["flavour"] == "pytorchjob":
        return [pytorch_job(k8s, name, train_overrides, meta_labels)]
    job = indexed_job(k8s, name, train_overrides, meta_labels)
    return [serialize(headless_service(k8s, name, meta_labels)), serialize(job)]


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """Manifests as one multi-document YAML stream, ready for `kubectl apply -f -`."""
    import yaml

    return "---\n".join(yaml.safe_dump(m, sort_keys=False) for m in manifests)
